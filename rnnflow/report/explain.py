"""Report sections that explain the gradient flow: the why table, the depth table and the verdicts.

* :func:`why_table`: per run and layer, ``ln ρ(W_hh)`` at the first probe (RNN layers:
  ``spectral/L/radius``), then at the first probe (init) and the last (end), side by side:
  ``log10 ratio`` (``grad_flow/L/log10_ratio``), ``ln α`` (log of ``grad_flow/L/decay_rate``) and ``λ₁``
  (``dynamics/L/lyapunov_max``; over a long sequence ``ln α ≈ λ₁``); at the end the mean activation
  derivative, the saturated fraction, the gate timescale and the early share of the credit.
* :func:`depth_table`: per configuration (the runs' overrides without ``seed``), per layer, the
  parameter gradient norm relative to the top layer (``params/L/grad_norm_to_top``) at the first
  probe, the median over the configuration's seeds, and the absolute norm of layer 0 and of the top.
* :func:`verdicts`: the verdict lines of every run (:func:`rnnflow.report.verdict.verdict_lines`) from
  its last scalar values and its config (``model.cell``, ``model.nonlinearity``, ``task.seq_len``).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence

import yaml

from rnnflow.report.runs import Run, Series
from rnnflow.report.table import differing_overrides
from rnnflow.report.verdict import layer_names, verdict_lines

TO_TOP = re.compile(r"^params/(.+)/grad_norm_to_top$")
NAN = float("nan")


def _value(series: Series | None, which: str) -> float:
    if series is None or not series.values.size:
        return NAN
    return series.first if which == "init" else series.last


def _fmt(value: float, spec: str = ".3g") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def run_config(run: Run) -> dict:
    path = run.path / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    with path.open() as handle:
        return yaml.safe_load(handle) or {}


def _layers(run: Run) -> list[str]:
    return layer_names({tag: 0.0 for tag in run.scalars})


def why_rows(runs: Sequence[Run], keys: Sequence[str]) -> list[list[str]]:
    rows = []
    for run in runs:
        for layer in _layers(run):
            if f"grad_flow/{layer}/log10_ratio" not in run.scalars:
                continue
            cells = [run.name, *(run.overrides.get(key, "") for key in keys), layer]
            radius = _value(run.scalar(f"spectral/{layer}/radius"), "init")  # rnn layers only
            cells.append(_fmt(math.log(radius), ".3f") if radius > 0 else "–")
            for which in ("init", "end"):
                ratio = _value(run.scalar(f"grad_flow/{layer}/log10_ratio"), which)
                alpha = _value(run.scalar(f"grad_flow/{layer}/decay_rate"), which)
                lyapunov = _value(run.scalar(f"dynamics/{layer}/lyapunov_max"), which)
                log_alpha = math.log(alpha) if alpha > 0 else NAN
                cells += [_fmt(ratio, ".2f"), _fmt(log_alpha, ".3f"), _fmt(lyapunov, ".3f")]
            cells.append(_fmt(_value(run.scalar(f"activations/{layer}/derivative_mean"), "end")))
            cells.append(_fmt(_value(run.scalar(f"activations/{layer}/saturated_fraction"), "end")))
            timescale = run.scalar(f"gates/{layer}/forget_timescale") or run.scalar(
                f"gates/{layer}/update_timescale"
            )
            cells.append(_fmt(_value(timescale, "end")))
            cells.append(_fmt(_value(run.scalar(f"grad_flow/{layer}/early_share"), "end"), ".2e"))
            rows.append(cells)
    return rows


WHY_HEADERS = [
    "layer",
    "ln ρ(W_hh) (init)",
    "log10 ratio (init)",
    "ln α (init)",
    "λ₁ (init)",
    "log10 ratio (end)",
    "ln α (end)",
    "λ₁ (end)",
    "mean φ' (end)",
    "saturated (end)",
    "gate τ (end)",
    "early share (end)",
]


def _markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def why_table(runs: Sequence[Run]) -> str | None:
    """The Markdown why table (None when no run logged a gradient-flow probe): one column per override
    key that differs between the runs, as in the runs table."""
    keys = differing_overrides(runs)
    rows = why_rows(runs, keys)
    return _markdown(["run", *keys, *WHY_HEADERS], rows) if rows else None


def depth_table(runs: Sequence[Run]) -> str | None:
    """The Markdown depth table (None when no run logged ``params/L/grad_norm_to_top``)."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if any(TO_TOP.match(tag) for tag in run.scalars):
            key = ", ".join(f"{k}={v}" for k, v in run.overrides.items() if k != "seed") or run.name
            groups.setdefault(key, []).append(run)
    layers: list[str] = []
    for members in groups.values():
        for run in members:
            layers += [
                m.group(1) for tag in run.scalars if (m := TO_TOP.match(tag)) and m.group(1) not in layers
            ]
    if len(layers) < 2:  # a single layer is its own top: nothing to compare
        return None
    headers = ["configuration", "seeds", *(f"{layer} / top" for layer in layers)]
    headers += [f"‖∇ {layers[0]}‖", f"‖∇ {layers[-1]}‖ (top)"]
    rows = []
    for key, members in groups.items():
        cells = [key, str(len(members))]
        for layer in layers:
            values = [_value(run.scalar(f"params/{layer}/grad_norm_to_top"), "init") for run in members]
            values = [v for v in values if not math.isnan(v)]
            cells.append(_fmt(statistics.median(values), ".2e") if values else "–")
        for layer in (layers[0], layers[-1]):
            values = [_value(run.scalar(f"params/{layer}/grad_norm"), "init") for run in members]
            values = [v for v in values if not math.isnan(v)]
            cells.append(_fmt(statistics.median(values), ".2e") if values else "–")
        rows.append(cells)
    return _markdown(headers, rows)


def run_verdict(run: Run) -> list[str]:
    """The verdict lines of one run read back (empty when it logged no per-layer evidence)."""
    config = run_config(run)
    model, task = config.get("model") or {}, config.get("task") or {}
    scalars = {tag: series.last for tag, series in run.scalars.items() if series.values.size}
    return verdict_lines(
        scalars,
        cell=model.get("cell", "rnn"),
        nonlinearity=model.get("nonlinearity", "tanh"),
        seq_len=task.get("seq_len"),
        settings=config,
    )


def verdicts(runs: Sequence[Run], labels: Sequence[str]) -> list[str]:
    """Markdown lines: per run its label and its verdict lines."""
    lines = []
    for run, label in zip(runs, labels, strict=True):
        found = run_verdict(run)
        if found:
            lines.append(f"**{run.name}** ({label})")
            lines.append("")
            lines += [f"- {line}" for line in found]
            lines.append("")
    return lines
