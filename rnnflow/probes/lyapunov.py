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


def lyapunov_exponents(
    trajectory: Trajectory, count: int = 1, qr_every: int = 1, seed: int = 0
) -> torch.Tensor:
    """``(n, k)`` finite-time exponents (descending) of each of the trajectory's n samples.

    ``count`` = k ≤ d; ``qr_every``: re-orthonormalise every that many steps (1 = every step; a
    longer interval is cheaper but lets the lower directions collapse onto the top one).
    """
    spec = trajectory.spec
    hidden = spec.hidden_size
    dim = 2 * hidden if spec.cell == "lstm" else hidden
    if not 1 <= count <= dim:
        raise ValueError(f"count={count}: expected 1 ≤ count ≤ {dim} (the state dimension)")
    steps, samples = trajectory.steps, trajectory.outputs.size(1)
    device = trajectory.outputs.device
    w_hh = spec.weights[1].detach().to(device, torch.float64)
    coefficients = [c.unsqueeze(-1) for c in _step_coefficients(trajectory)]  # (T, n, ·, 1)
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(dim, count, generator=generator, dtype=torch.float64)
    v = torch.linalg.qr(start)[0].to(device).expand(samples, dim, count).contiguous()
    logs = torch.zeros(samples, count, dtype=torch.float64, device=device)
    with torch.no_grad():
        for t in range(steps):
            factors = [c[t] for c in coefficients]
            if spec.cell == "rnn":
                v = factors[0] * torch.matmul(w_hh, v)
            elif spec.cell == "lstm":
                forget, into_cell, from_output, through_tanh = factors
                a = torch.matmul(w_hh, v[:, :hidden])  # (n, 4H, k)
                v_c = (into_cell * a[:, : 3 * hidden]).view(samples, 3, hidden, count).sum(dim=1)
                v_c.addcmul_(forget, v[:, hidden:])
                v_h = torch.addcmul(from_output * a[:, 3 * hidden :], through_tanh, v_c)
                v = torch.cat([v_h, v_c], dim=1)
            else:
                keep, via_z, via_n, via_r = factors
                a = torch.matmul(w_hh, v)  # (n, 3H, k)
                new = keep * v
                new.addcmul_(via_z, a[:, hidden : 2 * hidden])
                new.addcmul_(via_n, a[:, 2 * hidden :])
                new.addcmul_(via_r, a[:, :hidden])
                v = new
            if (t + 1) % qr_every == 0 or t == steps - 1:
                if count == 1:  # QR of one column: its norm (three cheap ops instead of a LAPACK call)
                    norm = torch.linalg.vector_norm(v, dim=1, keepdim=True)
                    logs += norm[:, 0].log()  # −inf where the direction was mapped to exactly 0
                    v = v / torch.where(norm > 0, norm, torch.ones_like(norm))
                else:
                    q, r = torch.linalg.qr(v)
                    logs += torch.diagonal(r, dim1=-2, dim2=-1).abs().log()
                    v = q
    return logs / steps
