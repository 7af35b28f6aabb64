"""Assemble a report for a run or a sweep directory: ``runs.csv``, figures (PNG) and ``report.md``.

Layout of the output directory (default ``<dir>/report/``)::

    report.md                  the table and every figure, by relative link
    runs.csv                   the table, one row per run (columns: rnnflow.report.table)
    loss_curves.png            train/loss and val/loss of all runs against their baselines
    grad_profiles_layerL.png   log10 ‖∂L/∂h_t‖ against t of all runs, at init and at the end
    heatmaps/NNN_<run>_layerL.png  per run and layer: training step × time step
"""

from __future__ import annotations

from pathlib import Path

from rnnflow.report.explain import depth_table, verdicts, why_table
from rnnflow.report.plots import plot_losses, plot_profiles, save_heatmaps
from rnnflow.report.profiles import profile_layers
from rnnflow.report.runs import Run, load_runs
from rnnflow.report.table import markdown_tables, run_labels, summarise, write_csv

COLUMN_NOTES = """\
*loss / baseline*: final `val/loss` over the task's trivial-baseline loss (< 1 beats the baseline).
*solved*: last `val/solved` (? when the run did not log it).
*log10 ratio*: log10 ‖∂L/∂h_0‖ / ‖∂L/∂h_(T-1)‖ at the first and the last gradient-flow probe;
*(k steps 0)*: k steps whose gradient is exactly 0 (`grad_flow/L/zero_steps`), the ratio is then
taken between the first and the last step with a non-zero gradient.
The verdict of the last: *vanishing* below −3 (the gradient at t = 0 under a thousandth of the last
step's), *exploding* above +3, *zero* when the gradient at t = 0 is exactly 0 (truncated BPTT).
More than 12 runs: one table per value of the first swept key, runs ordered by the other keys.
*ρ*: spectral radius of the recurrent matrix at the first and last probe; for LSTM/GRU the maximum
over the gates' recurrent blocks, with the gate that attains it in brackets.
*clip fraction*: last `clip/fraction`; *non-finite*: last `nonfinite/events`;
*wall time*: last event time − first event time.
"""


def _heatmap_section(heatmaps: list[tuple[Run, int, Path]], labels: dict[int, str], out: Path) -> list[str]:
    lines = ["## Gradient-flow heatmaps", ""]
    if not heatmaps:
        return [*lines, "No run logged gradient-flow probes.", ""]
    lines += [
        "Rows: training step; columns: time step t; colour: log10 ‖∂L/∂h_t‖ / ‖∂L/∂h_(T-1)‖ "
        "(the last heatmap image each run logged, or drawn from its profile records).",
        "",
    ]
    for run, layer, path in heatmaps:
        image = run.images.get(f"grad_flow/layer{layer}/heatmap")
        source = f"image logged at step {image[0]}" if image else "drawn from the profile records"
        lines += [
            f"**{run.name}: {labels[id(run)]}**, layer {layer} ({source})",
            "",
            f"![heatmap {run.name} layer {layer}]({path.relative_to(out).as_posix()})",
            "",
        ]
    return lines


WHY_NOTES = """\
*log10 ratio*: log10 ‖∂L/∂h_0‖ / ‖∂L/∂h_(T-1)‖; *ln α*: log of the fitted per-step factor of ‖∂L/∂h_t‖;
*λ₁*: top Lyapunov exponent of the forward dynamics along the probe batch (over a long sequence
ln α ≈ λ₁); *mean φ'*, *saturated*: activation derivative and fraction of entries with φ' < 1% of its
maximum (gated cells: the candidate's tanh); *gate τ*: median forget (LSTM) / update (GRU) timescale in
steps; *early share*: share of ∂L/∂W_hh from the first half of the sequence. init: first probe, end: last.
"""


def explain_section(runs: list[Run], labels: list[str]) -> list[str]:
    """The why table, the depth table and the verdicts (Markdown lines; empty parts left out)."""
    lines: list[str] = []
    why = why_table(runs)
    if why is not None:
        lines += ["## Why it vanishes", "", why, WHY_NOTES]
    depth = depth_table(runs)
    if depth is not None:
        lines += [
            "## Gradient through depth",
            "",
            "Parameter gradient norm of each layer relative to the top layer at the first probe, median over "
            "the seeds of each configuration; last two columns: absolute norms (medians).",
            "",
            depth,
        ]
    found = verdicts(runs, labels)
    if found:
        lines += ["## Verdicts", "", "Rules: `rnnflow.report.verdict.RULES` (README, *Why it vanishes*).", ""]
        lines += found
    return lines


def build_report(root: str | Path, out: str | Path | None = None) -> Path:
    """Read every run at or below ``root`` and write the report into ``out``; returns ``report.md``."""
    root = Path(root)
    out = Path(out) if out is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(root)
    labels = run_labels(runs)
    table = summarise(runs)
    write_csv(table, out / "runs.csv")

    loss_path = plot_losses(runs, labels, out / "loss_curves.png")
    layers = sorted({layer for run in runs for layer in profile_layers(run)})
    profile_paths = [
        plot_profiles(runs, labels, layer, out / f"grad_profiles_layer{layer}.png") for layer in layers
    ]
    heatmaps = save_heatmaps(runs, labels, out / "heatmaps")

    lines = [
        f"# rnnflow report: `{root.resolve().name}`",
        "",
        f"{len(runs)} run{'s' if len(runs) != 1 else ''} read from `{root}`. "
        "Table as CSV: [runs.csv](runs.csv).",
        "",
        "## Runs",
        "",
        markdown_tables(table),
        COLUMN_NOTES,
        "## Loss curves",
        "",
        f"![loss curves]({loss_path.name})",
        "",
        "## Gradient profiles",
        "",
    ]
    lines += ["log10 ‖∂L/∂h_t‖ at every time step t, at the first probe (init) and the last (end).", ""]
    for layer, path in zip(layers, profile_paths, strict=True):
        if path is not None:
            lines += [f"![gradient profiles layer {layer}]({path.name})", ""]
    if not layers:
        lines += ["No run logged gradient-flow probes.", ""]
    lines += explain_section(runs, labels)
    label_of = {id(run): label for run, label in zip(runs, labels, strict=True)}
    lines += _heatmap_section(heatmaps, label_of, out)
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
