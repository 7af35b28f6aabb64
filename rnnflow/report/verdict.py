"""A verdict per layer: healthy, or what goes wrong (vanishing/exploding through time or depth), with
the evidence and the remedies. The rules are data (:data:`RULES`), documented in README.

Evidence of a layer L is read from the last value of the run's scalar tags (those written by the
instruments during training, or read back from TensorBoard by ``scripts/report.py``):

=====================  =======================================================================
evidence key           tag (L = ``layer0``, ``encoder.rnn/layer0``, ...)
=====================  =======================================================================
``log10_ratio``        ``grad_flow/L/log10_ratio``: log10 ‖∂L/∂h_0‖ / ‖∂L/∂h_{T−1}‖
``decay_rate``         ``grad_flow/L/decay_rate``: fitted per-step factor α
``lyapunov_max``       ``dynamics/L/lyapunov_max``: top Lyapunov exponent λ₁
``saturated_fraction`` ``activations/L/saturated_fraction``
``dead_fraction``      ``activations/L/dead_fraction`` (ReLU)
``derivative_mean``    ``activations/L/derivative_mean``
``memory_ratio``       ``gates/L/forget_timescale`` (LSTM) or ``gates/L/update_timescale`` (GRU)
                       divided by ``task.seq_len``
``early_share``        ``grad_flow/L/early_share``
``depth_ratio``        ``params/L/grad_norm_to_top``: the layer's parameter gradient norm over the
                       top layer's
``loss_ratio``         ``val/loss`` / ``val/baseline_loss`` (the same for every layer)
``cell``               ``rnn``, ``lstm`` or ``gru``; ``nonlinearity``: ``tanh``, ``relu``, ``sigmoid``
=====================  =======================================================================

A rule fires when every one of its clauses ``(key, op, value)`` holds (``op`` one of ``<``,
``>``, ``==``, ``in``); a clause on missing evidence (instrument off, NaN) does not hold. A layer
on which no problem rule fires is ``healthy``. A rule's ``diagnosis`` names the problem, its
``remedies`` are config overrides or changes to try, in order, each for the cells it applies to.
Given the run's ``settings`` (its config, nested or flattened to dotted keys), a remedy whose every
``key=value`` is already the run's setting is not offered again; the line says so instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Clause = tuple[str, str, Any]


@dataclass(frozen=True)
class Rule:
    name: str
    diagnosis: str
    when: tuple[Clause, ...]
    evidence: tuple[str, ...]  # the keys quoted on the verdict line
    remedies: tuple[tuple[str, tuple[str, ...]], ...]  # (change to try, cells it applies to; () = all)


VANISHING_DECADES = -3.0  # log10 ratio below: the first step gets < 1/1000 of the last step's gradient
EXPLODING_DECADES = 3.0
SATURATED = 0.5  # fraction of (step, sample, unit) entries with φ' < 1% of its maximum
DEAD = 0.25  # fraction of ReLU units never active on the probe batch
SHORT_MEMORY = 0.1  # gate timescale / task.seq_len
FADING_DECADES = -1.0  # log10 ratio below: the gradient fades through time (short of vanishing)
LATE_CREDIT = 0.01  # share of the W_hh gradient from the first half of the sequence
DEPTH_DECADES = 1e-2  # layer gradient norm / top layer's: two orders of magnitude
NOT_LEARNING = 0.9  # val loss / baseline loss

ANY: tuple[str, ...] = ()  # a remedy for every cell
RNN, LSTM, GATED = ("rnn",), ("lstm",), ("lstm", "gru")

RULES: tuple[Rule, ...] = (
    Rule(
        "exploding_time",
        "exploding through time",
        (("log10_ratio", ">", EXPLODING_DECADES),),
        ("log10_ratio", "lyapunov_max", "decay_rate"),
        (
            ("clip.max_norm=1.0", ANY),
            ("model.init.spectral_radius=1.0", ANY),
            ("model.init.recurrent=orthogonal", ANY),
        ),
    ),
    Rule(
        "vanishing_time_sigmoid",
        "vanishing through time: σ' ≤ 1/4 shrinks every step",
        (("cell", "==", "rnn"), ("nonlinearity", "==", "sigmoid"), ("log10_ratio", "<", VANISHING_DECADES)),
        ("log10_ratio", "lyapunov_max", "decay_rate", "derivative_mean"),
        (("model.nonlinearity=tanh", RNN), ("model=lstm or model=gru (gating)", RNN)),
    ),
    Rule(
        "vanishing_time_rnn",
        "vanishing through time",
        (("cell", "==", "rnn"), ("log10_ratio", "<", VANISHING_DECADES)),
        ("log10_ratio", "lyapunov_max", "decay_rate", "saturated_fraction", "early_share"),
        (
            ("model=lstm or model=gru (gating)", RNN),
            ("model.init.recurrent=orthogonal model.init.spectral_radius=1.0", RNN),
            ("model.nonlinearity=relu model.init.recurrent=identity (IRNN)", RNN),
        ),
    ),
    Rule(
        "vanishing_time_gated",
        "vanishing through time",
        (("cell", "in", GATED), ("log10_ratio", "<", VANISHING_DECADES)),
        ("log10_ratio", "lyapunov_max", "memory_ratio", "early_share"),
        (("model.init.forget_bias=chrono", LSTM), ("model.init.recurrent=orthogonal", GATED)),
    ),
    Rule(
        "short_memory",
        "gate memory shorter than the task",
        # A short median timescale is a cause only where the gradient does fade: a gated layer
        # whose gradient reaches the first step (a few long-memory units carry it) is healthy.
        (("cell", "in", GATED), ("memory_ratio", "<", SHORT_MEMORY), ("log10_ratio", "<", FADING_DECADES)),
        ("memory_ratio", "log10_ratio", "early_share"),
        (("model.init.forget_bias=chrono", LSTM), ("model.init.forget_bias=3.0", LSTM)),
    ),
    Rule(
        "saturated",
        "saturated units cut the chain",
        (("saturated_fraction", ">", SATURATED), ("nonlinearity", "in", ("tanh", "sigmoid"))),
        ("saturated_fraction", "derivative_mean", "log10_ratio"),
        (
            ("model.init.recurrent=orthogonal", RNN),
            ("model.init.input=xavier", RNN),
            ("model.layer_norm=true", RNN),
        ),
    ),
    Rule(
        "dead_units",
        "dead ReLU units",
        (("dead_fraction", ">", DEAD),),
        ("dead_fraction", "saturated_fraction"),
        (
            ("model.nonlinearity=relu model.init.recurrent=identity (IRNN)", RNN),
            ("model.init.input=kaiming", RNN),
            ("a smaller optim.lr", RNN),
        ),
    ),
    Rule(
        "late_credit",
        "the weights learn from the last half of the sequence only",
        (("early_share", "<", LATE_CREDIT),),
        ("early_share", "log10_ratio"),
        (
            ("model=lstm or model=gru (gating)", RNN),
            ("model.init.recurrent=orthogonal model.init.spectral_radius=1.0", RNN),
            ("model.init.forget_bias=chrono", LSTM),
        ),
    ),
    Rule(
        "vanishing_depth",
        "vanishing through depth",
        (("depth_ratio", "<", DEPTH_DECADES),),
        ("depth_ratio",),
        (
            ("model.residual=true", ANY),
            ("model.layer_norm=true", ANY),
            ("model.init.input=xavier (tanh, sigmoid) or kaiming (relu)", ANY),
        ),
    ),
    Rule(
        "exploding_depth",
        "exploding through depth",
        (("depth_ratio", ">", 1 / DEPTH_DECADES),),
        ("depth_ratio",),
        (("model.layer_norm=true", ANY), ("clip.max_norm=1.0", ANY), ("model.init.input=xavier", ANY)),
    ),
)

# evidence key -> tag suffix (per layer) of the instrument that writes it
LAYER_TAGS = {
    "log10_ratio": "grad_flow/{}/log10_ratio",
    "decay_rate": "grad_flow/{}/decay_rate",
    "lyapunov_max": "dynamics/{}/lyapunov_max",
    "saturated_fraction": "activations/{}/saturated_fraction",
    "dead_fraction": "activations/{}/dead_fraction",
    "derivative_mean": "activations/{}/derivative_mean",
    "early_share": "grad_flow/{}/early_share",
    "depth_ratio": "params/{}/grad_norm_to_top",
}
TIMESCALE_TAGS = ("gates/{}/forget_timescale", "gates/{}/update_timescale")
# A layer is named by a tag of its evidence (not by any tag below grad_flow/: the per-t points
# grad_flow/L/profile_log10/tNNNN would read as a layer "L/profile_log10").
_EVIDENCE_NAMES = "|".join(sorted({re.escape(tag.rsplit("/", 1)[1]) for tag in LAYER_TAGS.values()}))
LAYER_NAME = re.compile(rf"^(?:grad_flow|dynamics|activations|gates|params)/(.+)/(?:{_EVIDENCE_NAMES})$")

LABELS = {
    "log10_ratio": "log10 ratio",
    "decay_rate": "ln α",
    "lyapunov_max": "λ₁",
    "saturated_fraction": "saturated",
    "dead_fraction": "dead units",
    "derivative_mean": "mean φ'",
    "memory_ratio": "gate timescale / T",
    "early_share": "early share",
    "depth_ratio": "grad norm / top layer's",
}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def holds(clause: Clause, evidence: Mapping[str, Any]) -> bool:
    key, op, value = clause
    actual = evidence.get(key)
    if actual is None or (isinstance(actual, float) and math.isnan(actual)):
        return False
    if op == "==":
        return actual == value
    if op == "in":
        return actual in value
    if op == "<":
        return actual < value
    if op == ">":
        return actual > value
    raise ValueError(f"unknown operator {op!r} in a verdict rule")


def fired_rules(evidence: Mapping[str, Any], rules: tuple[Rule, ...] = RULES) -> list[Rule]:
    """The rules whose clauses all hold; a more specific vanishing rule hides the generic one."""
    fired = [rule for rule in rules if all(holds(clause, evidence) for clause in rule.when)]
    names = {rule.name for rule in fired}
    if "vanishing_time_sigmoid" in names:
        fired = [rule for rule in fired if rule.name != "vanishing_time_rnn"]
    return fired


def layer_names(scalars: Mapping[str, float]) -> list[str]:
    """Layer names found in the per-layer tags, in first-seen order."""
    names: list[str] = []
    for tag in scalars:
        match = LAYER_NAME.match(tag)
        if match and match.group(1) not in names:
            names.append(match.group(1))
    return names


def layer_evidence(
    scalars: Mapping[str, float], layer: str, cell: str, nonlinearity: str | None, seq_len: int | None
) -> dict[str, Any]:
    """The evidence dict of one layer (module docstring) from ``{tag: last value}``."""
    evidence: dict[str, Any] = {"cell": cell, "nonlinearity": nonlinearity if cell == "rnn" else None}
    for key, tag in LAYER_TAGS.items():
        value = scalars.get(tag.format(layer))
        if value is not None:
            evidence[key] = float(value)
    if "decay_rate" in evidence:  # shown as ln α, next to λ₁
        alpha = evidence["decay_rate"]
        evidence["decay_rate"] = math.log(alpha) if alpha > 0 else float("nan")
    for tag in TIMESCALE_TAGS:
        value = scalars.get(tag.format(layer))
        if value is not None and seq_len:
            evidence["memory_ratio"] = float(value) / seq_len
    loss, baseline = scalars.get("val/loss"), scalars.get("val/baseline_loss")
    if loss is not None and baseline:
        evidence["loss_ratio"] = float(loss) / float(baseline)
    return evidence


def _format(key: str, value: Any) -> str:
    if not _finite(value):
        return f"{LABELS.get(key, key)} {value}"
    if key in ("early_share", "depth_ratio") and value != 0 and (abs(value) < 1e-2 or abs(value) > 1e3):
        return f"{LABELS[key]} {value:.1e}"
    return f"{LABELS.get(key, key)} {value:.3g}"


_OVERRIDE = re.compile(r"([A-Za-z_][\w.]*)=([^\s;,()]+)")
_UNSET = object()


def _setting(settings: Mapping[str, Any], key: str) -> Any:
    """``settings[key]`` for a flat ``{"model.init.input": ...}`` or a nested config."""
    if key in settings:
        return settings[key]
    node: Any = settings
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _UNSET
        node = node[part]
    return node


def _as_override(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def already_set(remedy: str, settings: Mapping[str, Any]) -> bool:
    """Whether every ``key=value`` of ``remedy`` is already the run's setting (nothing new to try)."""
    pairs = _OVERRIDE.findall(remedy)
    return bool(pairs) and all(
        (value := _setting(settings, key)) is not _UNSET and _as_override(value) == expected
        for key, expected in pairs
    )


def layer_verdict(layer: str, evidence: Mapping[str, Any], settings: Mapping[str, Any] | None = None) -> str:
    """One line: ``layer0: vanishing through time (log10 ratio -21, λ₁ -0.49, ...) → try: ...``."""
    fired = fired_rules(evidence)
    if not fired:
        shown = [k for k in ("log10_ratio", "lyapunov_max", "decay_rate") if _finite(evidence.get(k))]
        details = ", ".join(_format(k, evidence[k]) for k in shown)
        return f"{layer}: healthy" + (f" ({details})" if details else "")
    keys: list[str] = []
    for rule in fired:
        keys += [k for k in rule.evidence if k not in keys and k in evidence]
    remedies: list[str] = []
    cell = evidence.get("cell")
    for rule in fired:
        remedies += [r for r, cells in rule.remedies if r not in remedies and (not cells or cell in cells)]
    diagnosis = "; ".join(rule.diagnosis for rule in fired)
    details = ", ".join(_format(k, evidence[k]) for k in keys)
    tried = [r for r in remedies if settings is not None and already_set(r, settings)]
    remedies = [r for r in remedies if r not in tried]
    line = f"{layer}: {diagnosis} ({details})"
    if remedies:
        line += f" → try: {'; '.join(remedies)}"
        return line + (f" (already set: {'; '.join(tried)})" if tried else "")
    return line + f"; its usual remedies are already set: {'; '.join(tried)}"


def verdict_lines(
    scalars: Mapping[str, float],
    cell: str,
    nonlinearity: str | None = None,
    seq_len: int | None = None,
    layer_kinds: Mapping[str, tuple[str, str | None]] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> list[str]:
    """The verdict of a run: one line per layer, then one on the loss against the task's baseline.

    ``scalars``: ``{tag: last value}`` of the run (e.g. the last value of every TensorBoard scalar,
    or what the instruments logged at their last probe); ``cell``, ``nonlinearity``, ``seq_len``
    from the run's config (``model.cell``, ``model.nonlinearity``, ``task.seq_len``);
    ``layer_kinds`` ``{layer: (cell, nonlinearity)}`` overrides them per layer (mixed models);
    ``settings``: the run's config, so that a remedy already in effect is not offered again.
    """
    kinds = layer_kinds or {}
    lines = [
        layer_verdict(
            layer, layer_evidence(scalars, layer, *kinds.get(layer, (cell, nonlinearity)), seq_len), settings
        )
        for layer in layer_names(scalars)
    ]
    loss, baseline = scalars.get("val/loss"), scalars.get("val/baseline_loss")
    if _finite(loss) and _finite(baseline) and baseline > 0:
        ratio = loss / baseline
        state = "not learning" if ratio > NOT_LEARNING else "learning"
        lines.append(
            f"loss: {state} (val/loss {loss:.4g} = {ratio:.3g} × the task's baseline {baseline:.4g})"
        )
    return lines


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#|])")


def verdict_markdown(lines: list[str]) -> str:
    """The verdict lines as a Markdown list (TensorBoard's Text tab), special characters escaped."""
    return "\n".join("- " + _MARKDOWN_SPECIAL.sub(r"\\\1", line) for line in lines)
