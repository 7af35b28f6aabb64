"""Summaries of a gradient profile ``n_t = ‖∂L/∂h_t‖_F``, ``t = 0 … T-1`` (shape ``(T,)``).

* ``log10_ratio = log10(n_0 / n_{T-1})``: how many decades the gradient lost (< 0) or
  gained (> 0) on its way from the last step back to the first.
* ``decay_rate`` α: least-squares fit of ``log n_t ≈ a + (T-1-t) · log α`` over the
  steps with ``n_t > 0``; the per-step factor by which the gradient shrinks (α < 1) or
  grows (α > 1) going back one step. For ``h_t = W h_{t-1}`` with ``W = ρ·Q`` (Q
  orthogonal) it is exactly ρ.
* ``horizon(ε)``: the number of steps back from ``T-1`` over which the gradient stays
  within a factor ε of its last-step value: ``T-1-t*`` where ``t*`` is the smallest t
  such that ``n_s ≥ ε · n_{T-1}`` for every ``s ≥ t``. ``T-1`` means the gradient reaches
  the first step; 0 means it is lost after a single step.
* :func:`log_spaced_steps`: ~k steps spaced logarithmically in their distance from the
  end (``T-1-t ∈ {0, 1, 3, 10, 31, …, T-1}``), always including 0 and T-1.
"""

from __future__ import annotations

import math

import torch


def log10_ratio(profile: torch.Tensor) -> torch.Tensor:
    """``log10(n_0 / n_{T-1})`` (±inf or nan where a norm is 0)."""
    profile = profile.double()
    return torch.log10(profile[0]) - torch.log10(profile[-1])


def decay_fit(profile: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares ``log n_t ≈ log n̂_end + (T-1-t) · log α``: returns ``(α, n̂_end)``.

    Uses the steps with ``0 < n_t < ∞``; ``(nan, nan)`` if fewer than two.
    """
    profile = profile.double()
    distance = torch.arange(profile.numel() - 1, -1, -1, dtype=torch.float64, device=profile.device)
    valid = (profile > 0) & torch.isfinite(profile)
    if int(valid.sum()) < 2:
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        return nan, nan
    d, y = distance[valid], profile[valid].log()
    d_centered = d - d.mean()
    slope = (d_centered * (y - y.mean())).sum() / d_centered.square().sum()
    intercept = y.mean() - slope * d.mean()
    return slope.exp(), intercept.exp()


def decay_rate(profile: torch.Tensor) -> torch.Tensor:
    """Per-step factor α of :func:`decay_fit` (nan if fewer than two positive norms)."""
    return decay_fit(profile)[0]


def horizon(profile: torch.Tensor, factor: float = 1e-3) -> int:
    """Steps back from ``T-1`` over which ``n_t ≥ factor · n_{T-1}`` holds without a break."""
    profile = profile.double()
    below = ~(profile >= factor * profile[-1])  # nan counts as below
    if not bool(below.any()):
        return profile.numel() - 1
    last_below = int(torch.nonzero(below).max())
    return profile.numel() - 2 - last_below


def log_spaced_steps(length: int, count: int = 8) -> list[int]:
    """About ``count`` distinct steps in ``[0, length)``, log-spaced in distance from the end."""
    if length <= count:
        return list(range(length))
    distances = {round(math.expm1(k * math.log(length) / (count - 1))) for k in range(count)}
    distances.add(length - 1)
    return sorted({length - 1 - min(d, length - 1) for d in distances})
