"""The verdict rules: each on evidence built at its thresholds, and each on a training run built to
trigger it (read back from TensorBoard, as ``scripts/report.py`` does); the end-of-run lines as a user
sees them."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, TINY, compose_config
from omegaconf import OmegaConf

from rnnflow.report.explain import run_verdict
from rnnflow.report.runs import load_run
from rnnflow.report.verdict import (
    RULES,
    already_set,
    fired_rules,
    layer_evidence,
    layer_verdict,
    verdict_lines,
)


def names(evidence) -> set[str]:
    return {rule.name for rule in fired_rules(evidence)}


def test_rules_fire_at_their_thresholds_and_not_on_missing_evidence():
    assert names({"cell": "rnn", "nonlinearity": "tanh", "log10_ratio": -3.01}) == {"vanishing_time_rnn"}
    assert names({"cell": "rnn", "nonlinearity": "tanh", "log10_ratio": -2.99}) == set()
    assert names({"cell": "lstm", "log10_ratio": 3.5}) == {"exploding_time"}
    sigmoid = {"cell": "rnn", "nonlinearity": "sigmoid", "log10_ratio": -10.0}
    assert names(sigmoid) == {"vanishing_time_sigmoid"}  # hides the generic rnn rule
    assert names({"cell": "gru", "memory_ratio": 0.05, "log10_ratio": -1.5}) == {"short_memory"}
    # A short median timescale with a gradient that reaches the first step: not a cause of anything.
    assert names({"cell": "gru", "memory_ratio": 0.05, "log10_ratio": -0.5}) == set()
    assert names({"cell": "gru", "memory_ratio": 0.05}) == set()
    assert names({"cell": "rnn", "memory_ratio": 0.05, "log10_ratio": -1.5}) == set()
    assert names({"cell": "rnn", "nonlinearity": "tanh", "saturated_fraction": 0.6}) == {"saturated"}
    assert names({"cell": "rnn", "nonlinearity": "relu", "dead_fraction": 0.3}) == {"dead_units"}
    assert names({"cell": "lstm", "early_share": 0.001}) == {"late_credit"}
    assert names({"cell": "rnn", "depth_ratio": 1e-3}) == {"vanishing_depth"}
    assert names({"cell": "rnn", "depth_ratio": 1e3}) == {"exploding_depth"}
    assert names({"cell": "rnn", "nonlinearity": "tanh", "log10_ratio": float("nan")}) == set()
    assert names({"cell": "rnn"}) == set()
    assert {rule.name for rule in RULES} == {
        "exploding_time",
        "vanishing_time_sigmoid",
        "vanishing_time_rnn",
        "vanishing_time_gated",
        "short_memory",
        "saturated",
        "dead_units",
        "late_credit",
        "vanishing_depth",
        "exploding_depth",
    }


def test_verdict_line_quotes_evidence_and_only_remedies_for_its_cell():
    line = layer_verdict(
        "layer0", {"cell": "rnn", "nonlinearity": "tanh", "log10_ratio": -8.0, "early_share": 1e-5}
    )
    assert line.startswith("layer0: vanishing through time; the weights learn from the last half")
    assert "log10 ratio -8" in line and "early share 1.0e-05" in line
    assert "model=lstm" in line and "chrono" not in line  # chrono is an LSTM remedy
    lstm = layer_verdict("layer0", {"cell": "lstm", "log10_ratio": -8.0})
    assert "chrono" in lstm and "IRNN" not in lstm
    assert (
        layer_verdict("layer1", {"cell": "gru", "log10_ratio": -0.5}) == "layer1: healthy (log10 ratio -0.5)"
    )


def test_a_remedy_already_in_effect_is_not_offered_again():
    evidence = {"cell": "lstm", "log10_ratio": -8.0}
    offered = layer_verdict("layer0", evidence)
    assert "try: model.init.forget_bias=chrono; model.init.recurrent=orthogonal" in offered
    nested = {"model": {"init": {"forget_bias": "chrono", "recurrent": "default"}}}
    line = layer_verdict("layer0", evidence, nested)
    assert line.endswith(
        "→ try: model.init.recurrent=orthogonal (already set: model.init.forget_bias=chrono)"
    )
    flat = {"model.init.forget_bias": "chrono", "model.init.recurrent": "orthogonal"}  # a module's hparams
    assert layer_verdict("layer0", evidence, flat).endswith(
        "(log10 ratio -8); its usual remedies are already set: model.init.forget_bias=chrono; "
        "model.init.recurrent=orthogonal"
    )
    # Every key=value of a remedy must hold; values compare as the override would be written.
    rnn = {"cell": "rnn", "nonlinearity": "tanh", "log10_ratio": -8.0}
    half = {"model": {"init": {"recurrent": "orthogonal", "spectral_radius": 0.9}}}
    assert "model.init.recurrent=orthogonal model.init.spectral_radius=1.0;" in layer_verdict("l", rnn, half)
    both = {"model": {"init": {"recurrent": "orthogonal", "spectral_radius": 1.0}}}
    assert "already set: model.init.recurrent=orthogonal model.init.spectral_radius=1.0" in layer_verdict(
        "l", rnn, both
    )
    exploding = {"cell": "gru", "log10_ratio": 5.0}
    assert "try: clip.max_norm=1.0" in layer_verdict("l", exploding, {"clip": {"max_norm": 0.5}})
    assert "already set: clip.max_norm=1.0" in layer_verdict("l", exploding, {"clip": {"max_norm": 1.0}})


def test_verdict_lines_from_tags():
    scalars = {
        "grad_flow/layer0/log10_ratio": -1.2,
        "gates/layer0/forget_timescale": 2.0,
        "grad_flow/encoder.rnn/layer1/log10_ratio": -9.0,
        "val/loss": 0.17,
        "val/baseline_loss": 1 / 6,
    }
    lines = verdict_lines(scalars, cell="lstm", seq_len=100)
    assert lines[0].startswith("layer0: gate memory shorter than the task (gate timescale / T 0.02")
    assert lines[1].startswith("encoder.rnn/layer1: vanishing through time")
    assert lines[2].startswith("loss: not learning (val/loss 0.17 = 1.02 × the task's baseline")


RUNS = [
    # (rule, layer, overrides): each run is built so that the rule must fire on that layer
    (
        "exploding_time",
        "layer0",
        ["model=rnn", "model.init.recurrent=orthogonal", "model.init.spectral_radius=1.5"]
        + ["model.init.input=zeros", "model.init.bias=zeros", "task.seq_len=30"],
    ),
    (
        "vanishing_time_rnn",
        "layer0",
        ["model=rnn", "model.init.recurrent=orthogonal", "model.init.spectral_radius=0.5", "task.seq_len=30"],
    ),
    ("vanishing_time_sigmoid", "layer0", ["model=rnn", "model.nonlinearity=sigmoid", "task.seq_len=40"]),
    ("vanishing_time_gated", "layer0", ["model=lstm", "model.init.forget_bias=-6.0", "task.seq_len=30"]),
    ("short_memory", "layer0", ["model=lstm", "model.init.forget_bias=0.0", "task.seq_len=60"]),
    (
        "saturated",
        "layer0",
        ["model=rnn", "model.init.input=normal", "model.init.std=30.0", "model.init.recurrent=orthogonal"],
    ),
    (
        "dead_units",
        "layer0",
        ["model=rnn", "model.nonlinearity=relu", "model.init.input=zeros", "model.init.recurrent=zeros"]
        + ["model.init.bias=zeros"],
    ),
    (
        "late_credit",
        "layer0",
        ["model=rnn", "model.init.recurrent=orthogonal", "model.init.spectral_radius=0.5", "task.seq_len=30"],
    ),
    ("vanishing_depth", "layer0", ["experiment=depth_table", "depth_scheme=sigmoid_xavier", "seed=1"]),
    (
        "exploding_depth",
        "layer0",
        ["experiment=depth_table", "model.nonlinearity=tanh", "model.hidden_size=16", "model.residual=true"]
        + ["model.init.input=normal", "model.init.std=1.0"],
    ),
]


@pytest.mark.parametrize("rule,layer,overrides", RUNS, ids=[r[0] for r in RUNS])
def test_rule_fires_on_a_run_built_to_trigger_it(train_run, rule, layer, overrides):
    overrides = [*overrides, "trainer.max_steps=1", "trainer.val_check_interval=1"]
    _, run_dir = train_run(*overrides)
    # What a Hydra run leaves beside its events, read by scripts/report.py for the verdict.
    (run_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(compose_config(*TINY, *overrides), run_dir / ".hydra" / "config.yaml")
    run = load_run(run_dir)
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    scalars = {tag: series.last for tag, series in run.scalars.items()}
    evidence = layer_evidence(
        scalars, layer, config.model.cell, config.model.get("nonlinearity"), config.task.seq_len
    )
    assert rule in names(evidence), evidence
    lines = run_verdict(run)
    assert any(line.startswith(f"{layer}:") and "healthy" not in line for line in lines)
    for line in lines:  # nothing the run already does is offered as a remedy
        offered = line.split("→ try: ", 1)[1].split(" (already set:")[0] if "→ try: " in line else ""
        assert not [r for r in offered.split("; ") if r and already_set(r, config)], line


def test_healthy_run_and_end_of_run_lines_on_the_console(tmp_path):
    """A user runs train.py and reads the verdict at the end of the console output."""
    command = [
        sys.executable,
        "scripts/train.py",
        "model=lstm",
        "model.hidden_size=8",
        "task.seq_len=10",
        "task.batch_size=8",
        "task.val_batches=1",
        "trainer.max_steps=2",
        "trainer.enable_progress_bar=false",
        f"paths.output_dir={tmp_path / 'run'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "verdict" in output
    assert "layer0: healthy (log10 ratio" in output
    assert "loss: not learning (val/loss" in output
    # The same lines in TensorBoard's Text tab: the text summary "verdict" at the last step.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = [
        events.Tensors("verdict/text_summary")
        for path in sorted((tmp_path / "run").rglob("events.out.tfevents.*"))
        if "verdict/text_summary"
        in (events := EventAccumulator(str(path), {"tensors": 0}).Reload()).Tags()["tensors"]
    ]
    assert len(found) == 1, found
    (text,) = found[0]
    assert text.step == 2
    markdown = text.tensor_proto.string_val[0].decode()
    printed = [line.strip() for line in output.splitlines() if line.strip().startswith(("layer0:", "loss:"))]
    assert markdown.splitlines() == ["- " + line.replace("_", "\\_") for line in printed[:2]]
