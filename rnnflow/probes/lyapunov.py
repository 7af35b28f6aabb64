"""Lyapunov exponents of a recurrent layer along the actual trajectory of the probe batch.

For the state map ``s_t = F(s_{t-1}, x_t)`` (RNN and GRU: ``s = h``, dimension ``d = H``; LSTM:
the joint ``s = (h, c)``, ``d = 2H``) and one sample's trajectory, the step Jacobians
``J_t = ∂s_t/∂s_{t-1}`` ``(d, d)`` give the finite-time exponents ``λ_1 ≥ … ≥ λ_k`` by QR
iteration:

    V_0 = orthonormal (d, k);  V_t = J_t Q_{t-1},  Q_t R_t = V_t (every ``qr_every`` steps);
    λ_i = (1/T) Σ_t ln |R_t[i, i]|.

The tangent vectors are pushed through the Jacobian-vector products without forming ``J_t``
(time-major gates from :mod:`rnnflow.probes.trajectory`, kernel space ``u``; an affine change of
coordinates such as the sigmoid RNN's ``h = (u + 1)/2`` leaves the exponents unchanged):

* RNN: ``J_t v = φ'(a_t) ⊙ (W_hh v)`` with ``φ' = 1 − u_t²`` (tanh kernel), ``[u_t > 0]`` (relu).
* LSTM, ``a = W_hh v_h`` split into ``a^i a^f a^g a^o``:
  ``v_c' = f ⊙ v_c + g i(1−i) ⊙ a^i + c_{t-1} f(1−f) ⊙ a^f + i (1−g²) ⊙ a^g``,
  ``v_h' = tanh(c_t) o(1−o) ⊙ a^o + o (1 − tanh² c_t) ⊙ v_c'``.
* GRU, ``a = W_hh v`` split into ``a^r a^z a^n`` and ``m_t = W_hn u_{t-1} + b_hn``:
  ``v' = z ⊙ v + (u_{t-1} − n) z(1−z) ⊙ a^z + (1−z)(1−n²) ⊙ (r ⊙ a^n + m_t r(1−r) ⊙ a^r)``.

The gradient's backward product ``Π J_tᵀ`` has the same singular values as the forward product,
so over a long sequence the gradient's per-step decay α of :mod:`rnnflow.probes.profile_stats`
satisfies ``ln α ≈ λ_1``. For ``J_t = ρ Q`` (a tanh RNN at ``h = 0`` with ``W_hh = ρ Q``, zero
input weights and biases) every exponent is ``ln ρ`` exactly; for a diagonal ``W_hh`` they are
the sorted ``ln |W_ii|``.

The iteration runs in float64, batched over the samples (``(n, d, k)``). A direction mapped to
exactly zero (e.g. every ReLU unit off at one step) has ``ln 0 = −∞``: the exponent is then
``−inf``, which is the exact value (the perturbation is annihilated), not an overflow.
Cost: T sequential steps of one ``(G·H, H) @ (H, n·k)`` product and a few elementwise ops.
"""

from __future__ import annotations

import torch

from rnnflow.probes.trajectory import Trajectory


def _step_coefficients(trajectory: Trajectory) -> list[torch.Tensor]:
    """Per-step elementwise factors of the Jacobian-vector product, time-major ``(T, n, ·)``."""
    spec = trajectory.spec
    u = trajectory.outputs.double()
    if spec.cell == "rnn":
        slope = (u > 0).double() if spec.kernel == "rnn_relu" else 1 - u.square()
        return [slope]
    hidden = spec.hidden_size
    a = trajectory.preactivations.double()
    if spec.cell == "lstm":
        i, f, o = (torch.sigmoid(a[..., k * hidden : (k + 1) * hidden]) for k in (0, 1, 3))
        g = torch.tanh(a[..., 2 * hidden : 3 * hidden])
        c_prev, tanh_c = trajectory.previous_cells.double(), torch.tanh(trajectory.cells.double())
        into_cell = torch.cat([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g.square())], dim=-1)
        return [f, into_cell, tanh_c * o * (1 - o), o * (1 - tanh_c.square())]
    r, z = torch.sigmoid(a[..., :hidden]), torch.sigmoid(a[..., hidden : 2 * hidden])
    n = torch.tanh(a[..., 2 * hidden :])
    m = trajectory.recurrent_n.double()
    through_n = (1 - z) * (1 - n.square())
    return [z, (trajectory.previous.double() - n) * z * (1 - z), through_n * r, through_n * m * r * (1 - r)]


State = tuple[torch.Tensor, ...]  # (v,) or, for the LSTM, (v_h, v_c); each (n, ·, k)


def _tangent_step(cell: str, hidden: int, w_hh: torch.Tensor, factors: list[torch.Tensor], v: State) -> State:
    """``J_t v`` for the cell's step ``t`` (``factors``: that step's coefficients, module docstring)."""
    if cell == "rnn":
        return (factors[0] * torch.matmul(w_hh, v[0]),)
    if cell == "lstm":
        forget, into_cell, from_output, through_tanh = factors
        v_h, v_c = v
        samples, count = v_h.size(0), v_h.size(-1)
        a = torch.matmul(w_hh, v_h)  # (n, 4H, k)
        new_c = (into_cell * a[:, : 3 * hidden]).view(samples, 3, hidden, count).sum(dim=1)
        new_c.addcmul_(forget, v_c)
        return torch.addcmul(from_output * a[:, 3 * hidden :], through_tanh, new_c), new_c
    keep, via_z, via_n, via_r = factors
    a = torch.matmul(w_hh, v[0])  # (n, 3H, k)
    new = keep * v[0]
    new.addcmul_(via_z, a[:, hidden : 2 * hidden])
    new.addcmul_(via_n, a[:, 2 * hidden :])
    new.addcmul_(via_r, a[:, :hidden])
    return (new,)


# Renormalising a single tangent vector only every few steps is exact as long as its norm stays
# inside float64's range; outside these bounds the block is redone with a renormalisation per step.
_SAFE_LOW, _SAFE_HIGH = 1e-280, 1e280


def _orthonormalise(v: State, count: int) -> tuple[State, torch.Tensor, bool]:
    """``(Q, ln|diag R|, within range)`` of the QR factorisation of the stacked state ``(n, d, k)``."""
    stacked = v[0] if len(v) == 1 else torch.cat(v, dim=1)
    if count == 1:  # QR of one column: its norm (three cheap ops instead of a LAPACK call)
        norm = torch.linalg.vector_norm(stacked, dim=1, keepdim=True)
        q = stacked / torch.where(norm > 0, norm, torch.ones_like(norm))
        diagonal = norm[:, 0]
    else:
        q, r = torch.linalg.qr(stacked)
        diagonal = torch.diagonal(r, dim1=-2, dim2=-1).abs()
    safe = bool(((diagonal > _SAFE_LOW) & (diagonal < _SAFE_HIGH)).all())
    parts = (q,) if len(v) == 1 else tuple(q.split(v[0].size(1), dim=1))
    return parts, diagonal.log(), safe  # ln 0 = −inf where a direction was mapped to exactly 0


def lyapunov_exponents(
    trajectory: Trajectory, count: int = 1, qr_every: int = 1, seed: int = 0
) -> torch.Tensor:
    """``(n, k)`` finite-time exponents (descending) of each of the trajectory's n samples.

    ``count`` = k ≤ d; ``qr_every``: re-orthonormalise every that many steps. For k = 1 any interval
    gives the same exponent (a block whose norm leaves ``[1e−280, 1e280]`` is redone step by step);
    for k > 1 a long interval lets the lower directions collapse onto the top one (keep it below
    ~30 / (λ_1 − λ_k) steps).
    """
    spec = trajectory.spec
    hidden = spec.hidden_size
    dim = 2 * hidden if spec.cell == "lstm" else hidden
    if not 1 <= count <= dim:
        raise ValueError(f"count={count}: expected 1 ≤ count ≤ {dim} (the state dimension)")
    steps, samples = trajectory.steps, trajectory.outputs.size(1)
    device = trajectory.outputs.device
    w_hh = spec.weights[1].detach().to(device, torch.float64)
    per_step = list(zip(*(c.unsqueeze(-1).unbind(0) for c in _step_coefficients(trajectory)), strict=True))
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(dim, count, generator=generator, dtype=torch.float64)
    q = torch.linalg.qr(start)[0].to(device).expand(samples, dim, count).contiguous()
    v: State = (q,) if spec.cell != "lstm" else (q[:, :hidden].contiguous(), q[:, hidden:].contiguous())
    logs = torch.zeros(samples, count, dtype=torch.float64, device=device)
    with torch.no_grad():
        for begin in range(0, steps, qr_every):
            stop = min(begin + qr_every, steps)
            block_start = v
            for t in range(begin, stop):
                v = _tangent_step(spec.cell, hidden, w_hh, list(per_step[t]), v)
            v, increment, safe = _orthonormalise(v, count)
            if not safe and stop - begin > 1:  # redo the block with a renormalisation at every step
                v, increment = block_start, torch.zeros_like(logs)
                for t in range(begin, stop):
                    v = _tangent_step(spec.cell, hidden, w_hh, list(per_step[t]), v)
                    v, step_log, _ = _orthonormalise(v, count)
                    increment += step_log
            logs += increment
    return logs / steps
