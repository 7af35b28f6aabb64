"""The run table: one row per run, written as CSV and as Markdown.

Columns (CSV names; the Markdown table merges init/end pairs into ``init → end`` cells):

* ``run``: the run's short name: its directory relative to the report root, a sweep job's
  ``<num>_<overrides>`` directory shortened to ``<num>`` (the full path is the last column, ``path``);
* one column per Hydra override key whose value differs between runs (all of a single run's
  overrides; ``""`` where a run does not set the key);
* ``steps``: last training step logged (``train/loss``);
* ``val_loss``, ``baseline_loss``, ``loss_ratio``: last ``val/loss``, last ``val/baseline_loss``
  (the task's trivial baseline), and ``val_loss / baseline_loss`` (< 1: better than the baseline);
* ``val_accuracy``: last ``val/accuracy``, only when some run logs it;
* ``solved``: last ``val/solved`` > 0.5 (``True``/``False``), empty (NaN) when not logged;
* per layer L: ``layerL_log10_ratio_init``/``_end`` (``grad_flow/layerL/log10_ratio``
  = log10 ‖∂L/∂h_0‖ / ‖∂L/∂h_{T-1}‖ at the first and the last probe, taken over the steps with a
  non-zero gradient when some are exactly zero), ``layerL_zero_steps_init``/``_end``
  (``grad_flow/layerL/zero_steps``: steps whose gradient is exactly 0; columns present only when
  some run logs them), and
  ``layerL_radius_init``/``_end``: spectral radius ρ of the recurrent matrix at the first
  and the last probe. For gated cells (LSTM gates i f g o, GRU gates r z n) it is the
  **maximum over gates**, one number comparable across cell types; the gate attaining it is
  in ``layerL_radius_gate_init``/``_end`` (columns present only when some run is gated);
* ``clip_fraction``: last ``clip/fraction`` (fraction of steps whose gradient was clipped);
* ``nonfinite_events``: last ``nonfinite/events`` (steps with a non-finite loss or gradient);
* ``wall_time_s``: last event wall time − first event wall time;
* ``path``: the run directory relative to the report root (CSV only).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rnnflow.report.runs import Run
from rnnflow.report.verdict import EXPLODING_DECADES, VANISHING_DECADES

RATIO_TAG = re.compile(r"^grad_flow/layer(\d+)/log10_ratio$")
ZERO_STEPS_TAG = re.compile(r"^grad_flow/layer\d+/zero_steps$")
RADIUS_TAG = re.compile(r"^spectral/layer(\d+)/(?:([^/]+)/)?radius$")
NAN = float("nan")


@dataclass
class Table:
    """``columns`` in order, one ``rows`` dict per run (missing numbers are NaN)."""

    columns: list[str]
    rows: list[dict[str, object]]
    override_keys: list[str]
    layers: list[int]


def differing_overrides(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value differs between runs, in first-seen order (all keys for one run)."""
    keys: list[str] = []
    for run in runs:
        keys += [key for key in run.overrides if key not in keys]
    if len(runs) == 1:
        return keys
    return [key for key in keys if len({run.overrides.get(key, "") for run in runs}) > 1]


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Short legend labels: the differing overrides (``model=gru, seed=1``), else the run name."""
    keys = differing_overrides(runs) if len(runs) > 1 else []
    labels = []
    for run in runs:
        label = ", ".join(f"{key}={run.overrides[key]}" for key in keys if key in run.overrides)
        labels.append(label or run.name)
    return labels


def _layers(runs: Sequence[Run]) -> list[int]:
    found = set()
    for run in runs:
        for tag in run.scalars:
            match = RATIO_TAG.match(tag) or RADIUS_TAG.match(tag)
            if match:
                found.add(int(match.group(1)))
    return sorted(found)


def _last(run: Run, tag: str) -> float:
    series = run.scalar(tag)
    return series.last if series is not None else NAN


def spectral_radius(run: Run, layer: int, which: str) -> tuple[float, str]:
    """ρ at the first (``which="init"``) or last (``"end"``) probe.

    The maximum over gates, and the gate that attains it (``""`` for a vanilla RNN).
    """
    best, best_gate = NAN, ""
    for tag, series in run.scalars.items():
        match = RADIUS_TAG.match(tag)
        if not match or int(match.group(1)) != layer or not series.values.size:
            continue
        value = series.first if which == "init" else series.last
        if math.isnan(best) or value > best:
            best, best_gate = value, match.group(2) or ""
    return best, best_gate


def _solved(run: Run) -> object:
    value = _last(run, "val/solved")
    return NAN if math.isnan(value) else bool(value > 0.5)


def summarise(runs: Sequence[Run]) -> Table:
    """Build the table for ``runs`` (see the module docstring for the columns)."""
    keys = differing_overrides(runs)
    layers = _layers(runs)
    has_accuracy = any("val/accuracy" in run.scalars for run in runs)
    gated = any((match := RADIUS_TAG.match(tag)) and match.group(2) for run in runs for tag in run.scalars)
    has_zero_steps = any(ZERO_STEPS_TAG.match(tag) for run in runs for tag in run.scalars)
    columns = ["run", *keys, "steps", "val_loss", "baseline_loss", "loss_ratio"]
    columns += ["val_accuracy"] if has_accuracy else []
    columns += ["solved"]
    for layer in layers:
        columns += [f"layer{layer}_log10_ratio_init", f"layer{layer}_log10_ratio_end"]
        columns += [f"layer{layer}_zero_steps_init", f"layer{layer}_zero_steps_end"] if has_zero_steps else []
        columns += [f"layer{layer}_radius_init", f"layer{layer}_radius_end"]
        columns += [f"layer{layer}_radius_gate_init", f"layer{layer}_radius_gate_end"] if gated else []
    columns += ["clip_fraction", "nonfinite_events", "wall_time_s", "path"]

    rows = []
    for run in runs:
        train_loss = run.scalar("train/loss")
        row: dict[str, object] = {"run": run.name, **{key: run.overrides.get(key, "") for key in keys}}
        row["steps"] = int(train_loss.steps[-1]) if train_loss is not None and train_loss.steps.size else NAN
        row["val_loss"] = _last(run, "val/loss")
        row["baseline_loss"] = _last(run, "val/baseline_loss")
        row["loss_ratio"] = row["val_loss"] / row["baseline_loss"] if row["baseline_loss"] else NAN
        if has_accuracy:
            row["val_accuracy"] = _last(run, "val/accuracy")
        row["solved"] = _solved(run)
        for layer in layers:
            ratio = run.scalar(f"grad_flow/layer{layer}/log10_ratio")
            row[f"layer{layer}_log10_ratio_init"] = ratio.first if ratio is not None else NAN
            row[f"layer{layer}_log10_ratio_end"] = ratio.last if ratio is not None else NAN
            if has_zero_steps:
                zeros = run.scalar(f"grad_flow/layer{layer}/zero_steps")
                row[f"layer{layer}_zero_steps_init"] = zeros.first if zeros is not None else NAN
                row[f"layer{layer}_zero_steps_end"] = zeros.last if zeros is not None else NAN
            for which in ("init", "end"):
                radius, gate = spectral_radius(run, layer, which)
                row[f"layer{layer}_radius_{which}"] = radius
                if gated:
                    row[f"layer{layer}_radius_gate_{which}"] = gate
        row["clip_fraction"] = _last(run, "clip/fraction")
        row["nonfinite_events"] = _last(run, "nonfinite/events")
        row["wall_time_s"] = run.wall_time
        row["path"] = run.relative_path
        rows.append(row)
    return Table(columns=columns, rows=rows, override_keys=keys, layers=layers)


def _csv_cell(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return ""
    return repr(value) if isinstance(value, float) else value


def write_csv(table: Table, path: str | Path) -> None:
    """CSV with a header row; floats at full precision, missing values empty."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(table.columns)
        for row in table.rows:
            writer.writerow([_csv_cell(row.get(column, "")) for column in table.columns])


def _fmt(value: object, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and math.isinf(value):
        return "+∞" if value > 0 else "−∞"
    if isinstance(value, float):
        return format(value, spec)
    return str(value).replace("|", "\\|")


def _pair(row: dict[str, object], stem: str, spec: str, gate: bool, zeros: str | None = None) -> str:
    """``init → end``; ``zeros``: the stem of zero-step counts, shown as ``(k steps 0)`` where k > 0."""
    cells = []
    for which in ("init", "end"):
        text = _fmt(row.get(f"{stem}_{which}"), spec)
        if gate and row.get(f"{stem}_gate_{which}"):
            text += f" ({row[f'{stem}_gate_{which}']})"
        count = row.get(f"{zeros}_{which}") if zeros else None
        if isinstance(count, (int, float)) and count > 0:
            text += f" ({count:.0f} steps 0)"
        cells.append(text)
    return " → ".join(cells)


def ratio_word(log10_ratio: float) -> str:
    """``vanishing``/``exploding`` past the thresholds of :mod:`rnnflow.report.verdict`, ``zero`` at -inf."""
    if log10_ratio == -math.inf:
        return "zero"  # the gradient at t = 0 is exactly 0 (e.g. before the last chunk of truncated BPTT)
    if log10_ratio < VANISHING_DECADES:
        return "vanishing"
    if log10_ratio > EXPLODING_DECADES:
        return "exploding"
    return ""


def markdown_tables(table: Table, group_above: int = 12) -> str:
    """:func:`markdown_table`, split by the first swept key when there are more than ``group_above`` runs.

    Each group (``#### model=lstm (12 runs)``) lists its runs ordered by the other swept keys, so
    that a sweep of 40+ runs reads as a few short tables of runs that differ in one key at a time.
    """
    keys = table.override_keys
    if len(table.rows) <= group_above or not keys:
        return markdown_table(table)
    first, rest = keys[0], keys[1:]
    groups: dict[str, list[dict[str, object]]] = {}
    for row in table.rows:
        groups.setdefault(str(row.get(first, "")), []).append(row)
    parts = []
    for value in sorted(groups, key=_natural):
        rows = sorted(groups[value], key=lambda row: [_natural(str(row.get(k, ""))) for k in rest])
        sub = Table(columns=table.columns, rows=rows, override_keys=rest, layers=table.layers)
        parts += [
            f"#### {first}={value} ({len(rows)} run{'s' if len(rows) != 1 else ''})",
            "",
            markdown_table(sub),
        ]
    return "\n".join(parts)


def _natural(text: str) -> list[object]:
    return [
        (0, float(part), "") if _is_number(part) else (1, 0.0, part)
        for part in re.split(r"([-+]?\d*\.?\d+(?:e[-+]?\d+)?)", text)
        if part
    ]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def markdown_table(table: Table) -> str:
    """A GitHub-flavoured Markdown table; init/end pairs merged into one ``init → end`` cell.

    The log10 ratio cell ends with what its end value says (:func:`ratio_word`).
    """
    has_accuracy = "val_accuracy" in table.columns
    headers = ["run", *table.override_keys, "steps", "val loss", "baseline", "loss / baseline"]
    headers += ["val acc"] if has_accuracy else []
    headers += ["solved"]
    for layer in table.layers:
        headers += [f"L{layer} log10 ratio (init → end)", f"L{layer} ρ (init → end)"]
    headers += ["clip fraction", "non-finite", "wall time (s)"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in table.rows:
        solved = row["solved"]
        cells = [_fmt(row["run"]), *(_fmt(row[key]) for key in table.override_keys), _fmt(row["steps"])]
        cells += [_fmt(row["val_loss"]), _fmt(row["baseline_loss"]), _fmt(row["loss_ratio"], ".3f")]
        cells += [_fmt(row["val_accuracy"], ".3f")] if has_accuracy else []
        cells += ["?" if isinstance(solved, float) else _fmt(solved)]
        for layer in table.layers:
            ratio = _pair(
                row, f"layer{layer}_log10_ratio", ".2f", gate=False, zeros=f"layer{layer}_zero_steps"
            )
            end = row.get(f"layer{layer}_log10_ratio_end")
            word = ratio_word(float(end)) if isinstance(end, float) else ""
            cells.append(f"{ratio} ({word})" if word else ratio)
            cells.append(_pair(row, f"layer{layer}_radius", ".3f", gate=True))
        cells += [_fmt(row["clip_fraction"], ".3f"), _fmt(row["nonfinite_events"], ".0f")]
        cells += [_fmt(row["wall_time_s"], ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
