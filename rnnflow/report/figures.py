"""Matplotlib figures of gradient flow, shared by the TensorBoard callbacks and the report.

* :func:`profile_figure`: ``log10 ‖∂L/∂h_t‖`` against the time step t, one line per
  layer, with reference lines ``n_b · r^{b-t}`` for a per-step factor r through the last
  non-zero step b (:func:`theory_lines`: the fitted decay rate α, and for a vanilla RNN the bound
  ``γ‖W_hh‖₂`` and the linear-regime rate ``γρ(W_hh)``).
* :func:`heatmap_figure`: training step (rows) × time step (columns), colour =
  ``log10 ‖∂L/∂h_t‖ - log10 ‖∂L/∂h_b‖`` (0 at the last non-zero step b, which is T-1 unless the
  last steps are zero): the gradient reaching further back as the model learns shows as colour
  spreading to the left.

A step whose gradient is exactly zero has no logarithm. It is never left blank: the profile
draws it as a marker in :data:`ZERO_COLOUR` in a strip below the curves, the heatmap as a cell
in that colour, each with a legend entry; a heatmap cell without data (a probe that logged no
value there) is drawn in :data:`MISSING_COLOUR`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

ZERO_COLOUR = "#ff1f5b"  # outside viridis and the tab10 cycle of the layers and runs
MISSING_COLOUR = "#bdbdbd"
ZERO_LABEL = r"$\|\partial L/\partial h_t\| = 0$ exactly"


def _log10(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(np.asarray(values, dtype=np.float64))


def last_nonzero(profile: np.ndarray) -> int | None:
    """Index of the last step with a non-zero (and non-nan) norm; None if there is none."""
    steps = np.flatnonzero(np.nan_to_num(np.asarray(profile, dtype=np.float64), nan=0.0) != 0)
    return int(steps[-1]) if steps.size else None


ReferenceLine = tuple[float, float] | None  # (per-step rate r, value at t = T-1)


def theory_lines(
    profiles: Sequence[np.ndarray],
    fits: Sequence[tuple[float, float]],
    step_factors: Sequence[tuple[float, float] | None],
) -> dict[str, list[ReferenceLine]]:
    """The reference lines of :func:`profile_figure`, per layer.

    ``fits[i] = (α, n̂_end)`` (:func:`rnnflow.probes.profile_stats.decay_fit`); ``step_factors[i]``
    = ``(γ‖W_hh‖₂, γρ(W_hh))`` (:func:`rnnflow.probes.profile_stats.recurrent_step_factors`) or
    None (gated cells). The bound and linear-regime lines go through the last non-zero step b:
    ``n_b r^{b-t}``, written as their value at ``T-1``.
    """
    bound: list[ReferenceLine] = []
    linear: list[ReferenceLine] = []
    for profile, factors in zip(profiles, step_factors, strict=True):
        last = last_nonzero(profile)
        if factors is None or last is None:
            bound.append(None), linear.append(None)
            continue
        anchor, back = float(profile[last]), len(profile) - 1 - last
        with np.errstate(over="ignore", under="ignore", divide="ignore"):
            bound.append((factors[0], anchor * factors[0] ** -back))
            linear.append((factors[1], anchor * factors[1] ** -back))
    lines: dict[str, list[ReferenceLine]] = {}
    if any(line is not None for line in bound):
        lines["bound γ‖W_hh‖₂"] = bound
        lines["linear regime γρ(W_hh)"] = linear
    lines["α (fit)"] = list(fits)
    return lines


def zero_strip(axes: plt.Axes, rows: int) -> list[float]:
    """Extend the y axis downwards by a strip for ``rows`` rows of zero markers; their y positions."""
    low, high = axes.get_ylim()
    if not np.isfinite(low) or not np.isfinite(high) or high <= low:
        low, high = -1.0, 1.0
    height = 0.1 * (high - low) * (1 + 0.3 * (rows - 1))
    axes.set_ylim(low - height, high)
    for shared in axes.get_shared_y_axes().get_siblings(axes):
        shared.axhspan(low - height, low, color=ZERO_COLOUR, alpha=0.06, lw=0)
    return [low - height * (k + 1) / (rows + 1) for k in range(rows)]


def profile_figure(
    profiles: Sequence[np.ndarray],
    title: str,
    reference_lines: Mapping[str, Sequence[ReferenceLine]] | None = None,
    labels: Sequence[str] | None = None,
) -> Figure:
    """One line per profile ``(T,)``; ``reference_lines[name][i] = (r, n_end)`` draws ``n_end r^{T-1-t}``.

    Steps with ``n_t = 0`` exactly are markers in :data:`ZERO_COLOUR` in a strip at the bottom
    (one row per profile that has any), with a legend entry giving their count.
    """
    figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
    zeros: list[tuple[np.ndarray, str, str]] = []
    for index, profile in enumerate(profiles):
        profile = np.asarray(profile, dtype=np.float64)
        colour = colours[index % len(colours)]
        label = labels[index] if labels else f"layer{index}"
        steps = np.arange(len(profile))
        # Thick and translucent, so that a reference line lying exactly on it stays visible.
        axes.plot(steps, _log10(profile), color=colour, lw=3.5, alpha=0.45, label=label)
        for style, (name, lines) in zip(styles, (reference_lines or {}).items(), strict=False):
            line = lines[index] if index < len(lines) else None
            if line is None or not all(np.isfinite(v) and v > 0 for v in line):
                continue
            rate, end = line
            predicted = _log10(end) + (len(profile) - 1 - steps) * np.log10(rate)
            axes.plot(steps, predicted, ls=style, color=colour, lw=1.3, label=f"{label}: {name} = {rate:.3g}")
        if (profile == 0).any():
            zeros.append((steps[profile == 0], colour, label))
    for (steps, colour, label), y in zip(zeros, zero_strip(axes, len(zeros)) if zeros else [], strict=True):
        axes.plot(
            steps,
            np.full(steps.size, y),
            "|",
            color=ZERO_COLOUR,
            ms=7,
            mew=1.5,
            label=f"{label}: {ZERO_LABEL} ({steps.size} steps)",
        )
        axes.plot([-0.5], [y], "s", color=colour, ms=4)  # which layer's row
    axes.set_xlabel("time step t")
    axes.set_ylabel(r"$\log_{10}\,\|\partial L/\partial h_t\|$")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    return figure


def _relative_to_last_nonzero(profiles: np.ndarray) -> np.ndarray:
    """``log10 n - log10 n_b`` per row, b the row's last non-zero entry (-inf at zeros, nan without data)."""
    relative = np.full(profiles.shape, np.nan)
    for row, profile in enumerate(profiles):
        last = last_nonzero(profile)
        if last is not None:
            with np.errstate(invalid="ignore"):
                relative[row] = _log10(profile) - _log10(profile[last])
    return relative


def heatmap_figure(train_steps: Sequence[int], profiles: np.ndarray, title: str) -> Figure:
    """``profiles`` ``(P, bins)``: one binned profile per probe (rows = training steps).

    Cells whose norm is exactly 0 are drawn in :data:`ZERO_COLOUR`, cells without a value (nan)
    in :data:`MISSING_COLOUR`, each with a legend entry when present.
    """
    profiles = np.asarray(profiles, dtype=np.float64)
    figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    relative = _relative_to_last_nonzero(profiles)
    finite = relative[np.isfinite(relative)]
    low = float(np.percentile(finite, 2)) if finite.size else -1.0
    extent = (0, profiles.shape[1], 0, len(train_steps))
    colours = plt.get_cmap("viridis").with_extremes(bad=MISSING_COLOUR)
    image = axes.imshow(
        np.ma.masked_invalid(relative),
        aspect="auto",
        origin="lower",
        cmap=colours,
        vmin=min(low, -1e-3),
        vmax=max(0.0, float(finite.max()) if finite.size else 0.0),
        extent=extent,
        interpolation="nearest",
    )
    zero = profiles == 0
    handles = []
    if zero.any():
        axes.imshow(
            np.ma.masked_where(~zero, np.ones(profiles.shape)),
            aspect="auto",
            origin="lower",
            cmap=ListedColormap([ZERO_COLOUR]),
            extent=extent,
            interpolation="nearest",
        )
        handles.append(Patch(color=ZERO_COLOUR, label=ZERO_LABEL))
    if np.isnan(profiles).any():
        handles.append(Patch(color=MISSING_COLOUR, label="no value logged"))
    ticks = np.linspace(0, len(train_steps) - 1, num=min(6, len(train_steps))).round().astype(int)
    axes.set_yticks(ticks + 0.5, [str(train_steps[i]) for i in ticks])
    axes.set_xlabel("time step (binned)")
    axes.set_ylabel("training step")
    axes.set_title(title, fontsize=10, loc="left")
    if handles:
        axes.legend(handles=handles, fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False)
    figure.colorbar(
        image, ax=axes, label=r"$\log_{10}\,\|\partial L/\partial h_t\| / \|\partial L/\partial h_b\|$"
    )
    figure.tight_layout()
    return figure


def bin_profile(profile: np.ndarray, bins: int) -> np.ndarray:
    """Root-mean-square of ``profile`` over ``bins`` equal time bins (a profile of ≤ bins steps is kept).

    A bin is 0 only when every step in it is 0. Each bin is scaled by its largest value before
    squaring, so that norms far below 1e-154 do not underflow.
    """
    profile = np.asarray(profile, dtype=np.float64)
    if profile.size <= bins:
        return profile
    edges = np.linspace(0, profile.size, bins + 1).round().astype(int)
    binned = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        part = profile[a:b]
        scale = np.max(np.abs(part))
        binned.append(
            scale * np.sqrt(np.mean((part / scale) ** 2)) if scale > 0 and np.isfinite(scale) else scale
        )
    return np.array(binned)
