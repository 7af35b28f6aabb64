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

The iteration runs in float64 (a derivative such as σ'(a) = e^−100 stays exact; float32 would
flush it to zero), batched over the samples, the k vectors of each stored as rows ``(n, k, d)``.
A direction mapped to exactly zero (e.g. every ReLU unit off at one step) has ``ln 0 = −∞``: the
exponent is then ``−inf``, which is the exact value (the perturbation is annihilated), not an
overflow.

Segments: the T steps are sequential, and at the sizes of a probe (H ~ 128, a few samples) each
step is a small product dominated by per-operation overhead. With ``segment`` = L the trajectory is
cut into pieces of L counted steps that are iterated side by side as extra rows
(:func:`segment_plan`): about ``1.25 L`` sequential steps of one ``(S·n·k, H) @ (H, G·H)`` product
instead of T steps of an ``(n·k, H)`` one. Each segment but the first starts ``L/4`` steps early
(its warm-up, not counted), so that its vectors have turned towards the leading directions when
its counted steps begin.
"""

from __future__ import annotations

import torch

from rnnflow.probes.trajectory import Trajectory

State = tuple[torch.Tensor, ...]  # (v,) or, for the LSTM, (v_h, v_c); each (N, k, ·), rows = vectors


def _tangent_step(
    cell: str, hidden: int, w_hh_t: torch.Tensor, factors: tuple[torch.Tensor, ...], v: State
) -> State:
    """``J_t v`` for the cell's step ``t``; ``w_hh_t`` = ``W_hhᵀ``, ``factors`` ``(N, 1, ·)``.

    The tangent vectors are rows, ``(N, k, d)``: ``W_hh v`` for all of them is one ``(N·k, H) @ (H, G·H)``
    product (a broadcast ``(G·H, H) @ (N, H, k)`` would copy ``W_hh`` once per sample and step).
    """
    rows, count = v[0].shape[:2]
    a = torch.mm(v[0].reshape(rows * count, hidden), w_hh_t).view(rows, count, -1)
    if cell == "rnn":
        return (a.mul_(factors[0]),)
    if cell == "lstm":
        forget, into_gates, through_tanh = factors  # into_gates: [i, f, g] into c, then o into h
        a.mul_(into_gates)
        new_c = a[..., : 3 * hidden].view(rows, count, 3, hidden).sum(dim=2)
        new_c.addcmul_(forget, v[1])
        return torch.addcmul(a[..., 3 * hidden :], through_tanh, new_c), new_c
    keep, via_gates = factors  # via_gates: [r, z, n] blocks of a
    a.mul_(via_gates)
    new = a.view(rows, count, 3, hidden).sum(dim=2)
    return (new.addcmul_(keep, v[0]),)


def _step_coefficients(trajectory: Trajectory) -> list[torch.Tensor]:
    """Per-step elementwise factors of the Jacobian-vector product, time-major ``(T, n, ·)``."""
    spec = trajectory.spec
    u = trajectory.outputs.double()
    if spec.cell == "rnn":
        slope = (u > 0).double() if spec.kernel == "rnn_relu" else 1 - u.square()
        return [slope]
    hidden = spec.hidden_size
    a = trajectory.preactivations.double()
    # tanh of a contiguous copy of the block (a strided tanh takes the CPU's scalar path).
    candidate = torch.tanh(a[..., 2 * hidden : 3 * hidden].contiguous())
    if spec.cell == "lstm":
        i, f, o = (torch.sigmoid(a[..., k * hidden : (k + 1) * hidden]) for k in (0, 1, 3))
        g = candidate
        c_prev, tanh_c = trajectory.previous_cells.double(), torch.tanh(trajectory.cells.double())
        gates = torch.cat(
            [g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g.square()), tanh_c * o * (1 - o)], -1
        )
        return [f, gates, o * (1 - tanh_c.square())]
    r, z = torch.sigmoid(a[..., :hidden]), torch.sigmoid(a[..., hidden : 2 * hidden])
    n = candidate
    m = trajectory.recurrent_n.double()
    through_n = (1 - z) * (1 - n.square())
    via_gates = torch.cat(
        [through_n * m * r * (1 - r), (trajectory.previous.double() - n) * z * (1 - z), through_n * r], -1
    )
    return [z, via_gates]


# Renormalising a single tangent vector only every few steps is exact as long as its norm stays
# inside float64's range; outside these bounds the block is redone with a renormalisation per step.
_SAFE_LOW, _SAFE_HIGH = 1e-280, 1e280


def _orthonormalise(v: State, count: int) -> tuple[State, torch.Tensor, bool]:
    """``(Q, ln|diag R|, within range)`` of the QR factorisation of the stacked vectors ``(N, k, d)``."""
    stacked = v[0] if len(v) == 1 else torch.cat(v, dim=-1)
    if count == 1:  # QR of one column: its norm (three cheap ops instead of a LAPACK call)
        norm = torch.linalg.vector_norm(stacked, dim=-1, keepdim=True)
        q = stacked / torch.where(norm > 0, norm, torch.ones_like(norm))
        diagonal = norm[..., 0]
    else:
        q, r = torch.linalg.qr(stacked.transpose(-1, -2))
        q = q.transpose(-1, -2)
        diagonal = torch.diagonal(r, dim1=-2, dim2=-1).abs()
    safe = bool(((diagonal > _SAFE_LOW) & (diagonal < _SAFE_HIGH)).all())
    parts = (q,) if len(v) == 1 else tuple(p.contiguous() for p in q.split(v[0].size(-1), dim=-1))
    return parts, diagonal.log(), safe  # ln 0 = −inf where a direction was mapped to exactly 0


def segment_plan(steps: int, segment: int | None) -> tuple[int, int, list[int], list[int]]:
    """``(iterations J, warm-up τ, first step of each segment, counted iterations of each)``.

    Segment 0 covers steps ``[0, J)`` and counts them all; segment ``s ≥ 1`` starts τ steps before
    the end of the previous one's counted range (its warm-up, not counted) and counts the next
    ``segment`` steps (the last one: what remains). Every segment runs the same J = segment + τ
    iterations, side by side; with ``segment`` None or ``J ≥ steps``: one segment, J = steps.
    """
    if segment is None or segment + segment // 4 >= steps:
        return steps, 0, [0], [steps]
    warmup = segment // 4
    iterations = segment + warmup
    starts, counted, covered = [0], [iterations], iterations
    while covered < steps:
        starts.append(covered - warmup)
        counted.append(min(segment, steps - covered))
        covered += counted[-1]
    return iterations, warmup, starts, counted


def lyapunov_exponents(
    trajectory: Trajectory, count: int = 1, qr_every: int = 1, seed: int = 0, segment: int | None = None
) -> torch.Tensor:
    """``(n, k)`` finite-time exponents (descending) of each of the trajectory's n samples.

    ``count`` = k ≤ d; ``qr_every``: re-orthonormalise every that many steps. For k = 1 any interval
    gives the same exponent (a block whose norm leaves ``[1e−280, 1e280]`` is redone step by step);
    for k > 1 a long interval lets the lower directions collapse onto the top one (keep it below
    ~30 / (λ_1 − λ_k) steps).

    ``segment`` (None: one pass over all T steps): cut the trajectory into segments of that many
    counted steps, iterated side by side as extra samples (``T / segment`` times fewer sequential
    steps); each segment after the first first aligns its vectors over a warm-up of ``segment // 4``
    steps taken from the previous segment (:func:`segment_plan`). The exponent is the sum of the
    counted ``ln |R_ii|`` over all segments divided by T: the same as one pass wherever the
    warm-up has aligned the vectors (exactly so when every ``J_t`` is ρ times an orthogonal matrix).
    """
    spec = trajectory.spec
    hidden = spec.hidden_size
    dim = 2 * hidden if spec.cell == "lstm" else hidden
    if not 1 <= count <= dim:
        raise ValueError(f"count={count}: expected 1 ≤ count ≤ {dim} (the state dimension)")
    steps, samples = trajectory.steps, trajectory.outputs.size(1)
    device = trajectory.outputs.device
    iterations, warmup, starts, counted = segment_plan(steps, segment)
    segments = len(starts)
    # Time index of every (iteration, segment); past the end of the sequence (the last segment's
    # uncounted tail) the last step is repeated.
    times = torch.tensor(starts, device=device) + torch.arange(iterations, device=device).unsqueeze(1)
    times = times.clamp_(max=steps - 1).reshape(-1)
    coefficients = _step_coefficients(trajectory)
    if segments > 1:
        coefficients = [c[times].view(iterations, segments * samples, c.size(-1)) for c in coefficients]
    per_step = list(zip(*(c.unsqueeze(-2).unbind(0) for c in coefficients), strict=True))
    w_hh_t = spec.weights[1].detach().to(device, torch.float64).T.contiguous()
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(dim, count, generator=generator, dtype=torch.float64)
    q = torch.linalg.qr(start)[0].T.to(device).expand(segments * samples, count, dim).contiguous()
    v: State = (q,) if spec.cell != "lstm" else (q[..., :hidden].contiguous(), q[..., hidden:].contiguous())
    logs = torch.zeros(segments * samples, count, dtype=torch.float64, device=device)
    # Blocks between re-orthonormalisations; a block never straddles a segment's warm-up end or
    # counted end, so that every block is counted or not as a whole, per segment.
    bounds = {0, iterations, warmup, *(warmup + c for c in counted[1:])}
    bounds |= set(range(0, iterations, qr_every))
    bounds = sorted(b for b in bounds if 0 <= b <= iterations)
    with torch.no_grad():
        for begin, stop in zip(bounds[:-1], bounds[1:], strict=True):
            block_start = v
            for t in range(begin, stop):
                v = _tangent_step(spec.cell, hidden, w_hh_t, per_step[t], v)
            v, increment, safe = _orthonormalise(v, count)
            if not safe and stop - begin > 1:  # redo the block with a renormalisation at every step
                v, increment = block_start, torch.zeros_like(logs)
                for t in range(begin, stop):
                    v = _tangent_step(spec.cell, hidden, w_hh_t, per_step[t], v)
                    v, step_log, _ = _orthonormalise(v, count)
                    increment += step_log
            if segments == 1:
                logs += increment
                continue
            counts = [s == 0 or warmup <= begin and stop <= warmup + counted[s] for s in range(segments)]
            mask = torch.tensor(counts, device=device).repeat_interleave(samples).unsqueeze(-1)
            logs += torch.where(mask, increment, torch.zeros_like(increment))
    return logs.view(segments, samples, count).sum(dim=0) / steps
