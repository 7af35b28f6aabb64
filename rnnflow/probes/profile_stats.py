"""Summaries of a gradient profile ``n_t = ‖∂L/∂h_t‖_F``, ``t = 0 … T-1`` (shape ``(T,)``).

A step whose gradient is exactly zero in the backward (``n_t = 0``: a truncated-BPTT chunk
that no loss reaches, dead ReLU units, or a float32 underflow of the training computation
itself, below ~1e-38 per entry) is not a small gradient: no finite log describes it. Such
steps are counted, never folded into a number as ``-inf``:

* ``zero_steps``: the number of steps with ``n_t = 0`` exactly.
* The *span* ``[a, b]``: ``a`` and ``b`` are the first and the last step with ``n_t > 0``
  (``a = 0`` and ``b = T-1`` for a profile without zero steps).
* ``log10_ratio = log10(n_a / n_b)``: how many decades the gradient lost (< 0) or gained (> 0)
  on its way back over the span: ``log10(n_0 / n_{T-1})`` when no step is zero. When the first
  steps are zero the gradient went that many decades down and then stopped: read it together
  with ``zero_steps``. 0 for a span of one step; nan only when every step is zero (nothing
  to compare: ``zero_steps = T``); ±inf only when the backward itself overflowed to inf.
* ``decay_rate`` α: least-squares fit of ``log n_t ≈ a + (T-1-t) · log α`` over the steps
  with ``0 < n_t < ∞`` (zero steps have no log and are left out); the per-step factor by
  which the gradient shrinks (α < 1) or grows (α > 1) going back one step. For
  ``h_t = W h_{t-1}`` with ``W = ρ·Q`` (Q orthogonal) it is exactly ρ. nan with fewer than two
  such steps.
* ``horizon(ε)``: the number of steps back from ``b`` over which the gradient stays within a
  factor ε of its value there: ``b - t*`` where ``t*`` is the smallest t such that
  ``n_s ≥ ε · n_b`` for every ``t ≤ s ≤ b``. A zero step is never within. ``T-1`` means the
  gradient reaches the first step from the last; 0 means it is lost after a single step (or
  that every step is zero).
* :func:`log_spaced_steps`: ~k steps spaced logarithmically in their distance from the
  end (``T-1-t ∈ {0, 1, 3, 10, 31, …, T-1}``), always including 0 and T-1.
* :func:`recurrent_step_factors`: what theory says of the per-step factor of a vanilla RNN,
  ``γ‖W_hh‖₂`` (a bound) and ``γρ(W_hh)`` (the linear regime).
"""

from __future__ import annotations

import math

import torch

from rnnflow.models.fused import FusedSpec
from rnnflow.probes.spectral import gate_spectra

NAN = float("nan")


def zero_steps(profile: torch.Tensor) -> int:
    """Number of steps whose gradient is exactly zero (``n_t == 0``)."""
    return int((profile == 0).sum())


def nonzero_span(profile: torch.Tensor) -> tuple[int, int] | None:
    """``(a, b)``: the first and last step with ``n_t ≠ 0`` (nan and inf count as non-zero); None if none."""
    steps = torch.nonzero(profile != 0).flatten()
    if steps.numel() == 0:
        return None
    return int(steps[0]), int(steps[-1])


def log10_ratio(profile: torch.Tensor) -> torch.Tensor:
    """``log10(n_a / n_b)`` over the non-zero span (see the module docstring); nan if every step is 0."""
    profile = profile.double()
    span = nonzero_span(profile)
    if span is None:
        return torch.tensor(NAN, dtype=torch.float64)
    first, last = span
    return torch.log10(profile[first]) - torch.log10(profile[last])


def decay_fit(profile: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares ``log n_t ≈ log n̂_end + (T-1-t) · log α``: returns ``(α, n̂_end)``.

    Uses the steps with ``0 < n_t < ∞``; ``(nan, nan)`` if fewer than two.
    """
    profile = profile.double()
    distance = torch.arange(profile.numel() - 1, -1, -1, dtype=torch.float64, device=profile.device)
    valid = (profile > 0) & torch.isfinite(profile)
    if int(valid.sum()) < 2:
        nan = torch.tensor(NAN, dtype=torch.float64)
        return nan, nan
    d, y = distance[valid], profile[valid].log()
    d_centered = d - d.mean()
    slope = (d_centered * (y - y.mean())).sum() / d_centered.square().sum()
    intercept = y.mean() - slope * d.mean()
    return slope.exp(), intercept.exp()


def decay_rate(profile: torch.Tensor) -> torch.Tensor:
    """Per-step factor α of :func:`decay_fit` (nan if fewer than two positive finite norms)."""
    return decay_fit(profile)[0]


def horizon(profile: torch.Tensor, factor: float = 1e-3) -> int:
    """Steps back from the last non-zero step ``b`` over which ``n_t ≥ factor · n_b`` holds unbroken."""
    profile = profile.double()
    span = nonzero_span(profile)
    if span is None:
        return 0
    last = span[1]
    head = profile[: last + 1]
    below = ~(head >= factor * head[-1])  # nan counts as below, and so does every zero step
    if not bool(below.any()):
        return last
    return last - 1 - int(torch.nonzero(below).max())


def log_spaced_steps(length: int, count: int = 8) -> list[int]:
    """About ``count`` distinct steps in ``[0, length)``, log-spaced in distance from the end."""
    if length <= count:
        return list(range(length))
    distances = {round(math.expm1(k * math.log(length) / (count - 1))) for k in range(count)}
    distances.add(length - 1)
    return sorted({length - 1 - min(d, length - 1) for d in distances})


def recurrent_step_factors(spec: FusedSpec) -> tuple[float, float] | None:
    """``(γ‖W_hh‖₂, γ ρ(W_hh))`` for a vanilla RNN layer (tanh, ReLU, sigmoid); None for gated cells.

    One step back multiplies the gradient by ``J_tᵀ = W_hhᵀ diag(φ'(a_t))``, so
    ``‖∂L/∂h_{t-1}‖ ≤ γ ‖W_hh‖₂ ‖∂L/∂h_t‖`` with ``γ = max φ'`` (1 for tanh and ReLU, 1/4 for
    the sigmoid): without direct gradients between, ``n_t ≤ n_{T-1} (γ‖W_hh‖₂)^{T-1-t}``. The
    spectral radius ρ bounds nothing over a finite horizon (a non-normal ``W_hh`` has
    ``ρ < ‖W_hh‖₂``: ``0.5·I + 2·S``, S the shift, has ρ = 0.5 and ‖W‖₂ = 2.5); it is the rate
    in the linear regime (φ' constant = γ: tanh near 0, ReLU with every unit active, sigmoid
    near pre-activation 0), where the gradient shrinks asymptotically by ``γρ`` per step.

    The kernel-space ``W_hh`` of :class:`~rnnflow.models.fused.FusedSpec` already carries γ: the
    sigmoid RNN runs as a tanh RNN with ``W_hh / 4``.
    """
    if spec.cell != "rnn":
        return None
    radius, norm = gate_spectra(spec.weights[1], ("h",))["h"]
    return norm, radius
