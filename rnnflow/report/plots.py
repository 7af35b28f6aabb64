"""The report's figures, one PNG each, with one colour per run shared by every figure.

* :func:`plot_profiles`: log10 ‖∂L/∂h_t‖ against t for every run, at the first probe
  (initialisation, left) and the last probe (end of training, right), at every t from the
  full-resolution profile records (:mod:`rnnflow.report.profiles`; a step whose norm is exactly 0
  has no log and is drawn in a strip below the curves, one row per run, in the zero colour of
  :mod:`rnnflow.report.figures`, with a legend entry).
* :func:`plot_losses`: ``train/loss`` (left) and ``val/loss`` (right) against the training step,
  with the ``val/baseline_loss`` as a dashed line (black when shared by all runs).
* :func:`save_heatmaps`: per run and layer, the last ``grad_flow/layerL/heatmap`` image the
  run logged, or, if it logged none, a heatmap drawn from the profile records (training step ×
  time step).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rnnflow.report.figures import ZERO_COLOUR, ZERO_LABEL, heatmap_figure, zero_strip  # noqa: E402
from rnnflow.report.profiles import profile_at, profile_layers, profile_matrix  # noqa: E402
from rnnflow.report.runs import Run  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_colours(count: int) -> list[tuple[float, ...]]:
    """One colour per run: tab10 up to 10 runs, tab20 up to 20, then a continuous map."""
    if count <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(count)]
    if count <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(count)]
    return [plt.get_cmap("viridis")(x) for x in np.linspace(0, 1, count)]


def _legend(axes: plt.Axes, count: int) -> None:
    """Up to 8 runs inside the axes (long override labels wrapped, below the panel); beyond, beside
    the axes in columns of up to 25 entries (40+ runs)."""
    handles, labels = axes.get_legend_handles_labels()
    if not labels:
        return
    if count > 8:
        columns = -(-count // 25)
        axes.legend(
            handles,
            labels,
            fontsize=6,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            ncol=columns,
            frameon=False,
        )
        return
    size = 7 if count <= 6 else 6
    if max(len(label) for label in labels) > 45:  # long override lists: wrapped, below the panel
        labels = [textwrap.fill(label, 60, subsequent_indent="  ") for label in labels]
        axes.legend(handles, labels, fontsize=size, loc="upper left", bbox_to_anchor=(0.0, -0.2))
    else:
        axes.legend(handles, labels, fontsize=size, loc="best")


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_profiles(runs: Sequence[Run], labels: Sequence[str], layer: int, path: str | Path) -> Path | None:
    """Gradient profiles of all runs overlaid, at init and at the end; None if no run has this layer."""
    colours = run_colours(len(runs))
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    panel_zeros: list[list[tuple[np.ndarray, tuple[float, ...]]]] = []
    drawn = False
    for panel, which in zip(axes, ("init", "end"), strict=True):
        zeros = []
        for run, label, colour in zip(runs, labels, colours, strict=True):
            profile = profile_at(run, layer, which)
            if profile is None:
                continue
            step, t, norms = profile
            with np.errstate(divide="ignore", invalid="ignore"):
                logs = np.log10(norms)
            keep = np.isfinite(logs)
            panel.plot(t[keep], logs[keep], "-", color=colour, lw=1.5, label=f"{label} (step {step})")
            if (norms == 0).any():
                zeros.append((t[norms == 0], colour))
            drawn = True
        # sharey: the strip is added once, on the last panel, after both panels have their data.
        panel_zeros.append(zeros)
        panel.set_title(
            f"layer {layer}: {'first probe (init)' if which == 'init' else 'last probe (end)'}", fontsize=10
        )
        panel.set_xlabel("time step t")
        panel.grid(alpha=0.3)
        _legend(panel, len(runs))
    rows = max(len(zeros) for zeros in panel_zeros)
    if rows:
        heights = zero_strip(axes[-1], rows)
        for panel, zeros in zip(axes, panel_zeros, strict=True):
            for (t, colour), y in zip(zeros, heights, strict=False):
                panel.plot(t, np.full(t.size, y), "v", mfc=ZERO_COLOUR, mec=colour, ms=6, mew=1.2, ls="none")
            if zeros:
                panel.plot([], [], "v", color=ZERO_COLOUR, ls="none", label=f"{ZERO_LABEL} (edge: run)")
                _legend(panel, len(runs))
    axes[0].set_ylabel(r"$\log_{10}\,\|\partial L/\partial h_t\|$")
    if not drawn:
        plt.close(figure)
        return None
    return _save(figure, Path(path))


def _common_baseline(runs: Sequence[Run]) -> float | None:
    """The baseline shared by all runs (to draw it once, in black), or None if they differ."""
    values = [run.scalar("val/baseline_loss").last for run in runs if run.scalar("val/baseline_loss")]
    finite = [value for value in values if np.isfinite(value)]
    if finite and len(finite) == len(runs) and np.allclose(finite, finite[0], rtol=1e-6):
        return finite[0]
    return None


def plot_losses(runs: Sequence[Run], labels: Sequence[str], path: str | Path) -> Path:
    """Training and validation loss of all runs, each against its trivial baseline (dashed).

    One black dashed line when every run has the same baseline, else one per run in its colour;
    the y axis is logarithmic when the losses span more than a decade.
    """
    colours = run_colours(len(runs))
    common = _common_baseline(runs)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True, sharey=True)
    values = []
    for panel, tag in zip(axes, ("train/loss", "val/loss"), strict=True):
        for run, label, colour in zip(runs, labels, colours, strict=True):
            series = run.scalar(tag)
            if series is not None:
                style = dict(lw=1.0, alpha=0.8) if tag == "train/loss" else dict(lw=1.5, marker="o", ms=3)
                panel.plot(series.steps, series.values, color=colour, label=label, **style)
                values.append(series.values[np.isfinite(series.values)])
            baseline = run.scalar("val/baseline_loss")
            if common is None and baseline is not None and np.isfinite(baseline.last):
                panel.axhline(baseline.last, color=colour, ls="--", lw=1.0, alpha=0.9)
        if common is not None:
            panel.axhline(common, color="black", ls="--", lw=1.0, label=f"baseline {common:.4g}")
        panel.set_title(f"{tag} (dashed: val/baseline_loss)", fontsize=10)
        panel.set_xlabel("training step")
        panel.grid(alpha=0.3)
        _legend(panel, len(runs))
    losses = np.concatenate(values) if values else np.array([])
    if losses.size and losses.min() > 0 and losses.max() / losses.min() > 10:
        axes[0].set_yscale("log")
    axes[0].set_ylabel("loss")
    return _save(figure, Path(path))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,-]+", "_", text).strip("_") or "run"


HEATMAP_TAG = re.compile(r"^grad_flow/layer(\d+)/heatmap$")


def save_heatmaps(
    runs: Sequence[Run], labels: Sequence[str], out_dir: str | Path
) -> list[tuple[Run, int, Path]]:
    """Write one heatmap PNG per run and layer into ``out_dir``; returns ``(run, layer, path)`` triples."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*_layer*.png"):  # from an earlier report into the same directory
        stale.unlink()
    written, used = [], set()
    for index, (run, label) in enumerate(zip(runs, labels, strict=True)):
        image_layers = {int(match.group(1)) for tag in run.images if (match := HEATMAP_TAG.match(tag))}
        layers = sorted(set(profile_layers(run)) | image_layers)
        for layer in layers:
            stem = _slug(run.name) if _slug(run.name) not in used else f"{_slug(run.name)}_{index}"
            path = out_dir / f"{stem}_layer{layer}.png"
            image = run.images.get(f"grad_flow/layer{layer}/heatmap")
            if image is not None and image[1].startswith(PNG_MAGIC):
                path.write_bytes(image[1])
            else:
                matrix = profile_matrix(run, layer)
                if matrix is None:
                    continue
                figure = heatmap_figure(
                    matrix.train_steps.tolist(), matrix.norms, f"{label}: layer {layer} (profile records)"
                )
                figure.savefig(path, dpi=100)
                plt.close(figure)
            written.append((run, layer, path))
        used.add(_slug(run.name))
    return written
