"""Matplotlib figures of gradient flow, shared by the TensorBoard callbacks and the report.

* :func:`profile_figure`: ``log10 ‖∂L/∂h_t‖`` against the time step t, one line per
  layer, with reference lines ``n_{T-1} · r^{T-1-t}`` for a per-step factor r (the
  spectral radius ρ of an RNN's ``W_hh``, and the fitted decay rate α).
* :func:`heatmap_figure`: training step (rows) × time step (columns), colour =
  ``log10 ‖∂L/∂h_t‖ - log10 ‖∂L/∂h_{T-1}‖`` (0 at the last step): the gradient reaching
  further back as the model learns shows as colour spreading to the left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def _log10(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(np.asarray(values, dtype=np.float64))


ReferenceLine = tuple[float, float] | None  # (per-step rate r, value at t = T-1)


def profile_figure(
    profiles: Sequence[np.ndarray],
    title: str,
    reference_lines: Mapping[str, Sequence[ReferenceLine]] | None = None,
    labels: Sequence[str] | None = None,
) -> Figure:
    """One line per profile ``(T,)``; ``reference_lines[name][i] = (r, n_end)`` draws ``n_end r^{T-1-t}``."""
    figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, profile in enumerate(profiles):
        colour = colours[index % len(colours)]
        label = labels[index] if labels else f"layer{index}"
        steps = np.arange(len(profile))
        # Thick and translucent, so that a reference line lying exactly on it stays visible.
        axes.plot(steps, _log10(profile), color=colour, lw=3.5, alpha=0.45, label=label)
        for style, (name, lines) in zip(("--", ":", "-."), (reference_lines or {}).items(), strict=False):
            line = lines[index] if index < len(lines) else None
            if line is None or not all(np.isfinite(v) and v > 0 for v in line):
                continue
            rate, end = line
            predicted = _log10(end) + (len(profile) - 1 - steps) * np.log10(rate)
            axes.plot(steps, predicted, style, color=colour, lw=1.3, label=f"{label}: {name} = {rate:.3g}")
    axes.set_xlabel("time step t")
    axes.set_ylabel(r"$\log_{10}\,\|\partial L/\partial h_t\|$")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    return figure


def heatmap_figure(train_steps: Sequence[int], profiles: np.ndarray, title: str) -> Figure:
    """``profiles`` ``(P, bins)``: one binned profile per probe (rows = training steps)."""
    figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    with np.errstate(invalid="ignore"):  # inf - inf where a probe had no finite gradient
        relative = _log10(profiles) - _log10(profiles[:, -1:])
    relative = np.where(np.isfinite(relative), relative, np.nan)
    finite = relative[np.isfinite(relative)]
    low = float(np.percentile(finite, 2)) if finite.size else -1.0
    image = axes.imshow(
        relative,
        aspect="auto",
        origin="lower",
        cmap="viridis",
        vmin=min(low, -1e-3),
        vmax=max(0.0, float(finite.max()) if finite.size else 0.0),
        extent=(0, profiles.shape[1], 0, len(train_steps)),
        interpolation="nearest",
    )
    ticks = np.linspace(0, len(train_steps) - 1, num=min(6, len(train_steps))).round().astype(int)
    axes.set_yticks(ticks + 0.5, [str(train_steps[i]) for i in ticks])
    axes.set_xlabel("time step (binned)")
    axes.set_ylabel("training step")
    axes.set_title(title, fontsize=10)
    figure.colorbar(
        image, ax=axes, label=r"$\log_{10}\,\|\partial L/\partial h_t\| / \|\partial L/\partial h_{T-1}\|$"
    )
    figure.tight_layout()
    return figure


def bin_profile(profile: np.ndarray, bins: int) -> np.ndarray:
    """Root-mean-square of ``profile`` over ``bins`` equal time bins (a profile of ≤ bins steps is kept)."""
    profile = np.asarray(profile, dtype=np.float64)
    if profile.size <= bins:
        return profile
    edges = np.linspace(0, profile.size, bins + 1).round().astype(int)
    return np.array([np.sqrt(np.mean(profile[a:b] ** 2)) for a, b in zip(edges[:-1], edges[1:], strict=True)])
