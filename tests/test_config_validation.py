"""Bad input fails before anything is built, with one line naming the key and the accepted values."""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import ROOT, compose_config
from hydra.errors import ConfigCompositionException, MissingConfigException

from rnnflow.config import ConfigError, validate_config

BAD_VALUES = [
    ("task.seq_len=0", "task.seq_len=0", "integer >= 1"),
    ("task.seq_len=-5", "task.seq_len=-5", "integer >= 1"),
    ("task.batch_size=0", "task.batch_size=0", "integer >= 1"),
    ("model.hidden_size=0", "model.hidden_size=0", "integer >= 1"),
    ("model.num_layers=0", "model.num_layers=0", "integer >= 1"),
    ("model.init.recurrent=banana", "model.init.recurrent='banana'", "orthogonal, identity, zeros"),
    ("model.init.input=identity", "model.init.input='identity'", "one of default"),
    ("model.init.spectral_radius=0", "model.init.spectral_radius=0", "number > 0"),
    ("model.init.spectral_radius=-1", "model.init.spectral_radius=-1", "number > 0"),
    ("optim.lr=-0.1", "optim.lr=-0.1", "number > 0"),
    ("clip.max_norm=-1", "clip.max_norm=-1", "number > 0 or null"),
    ("clip.algorithm=median", "clip.algorithm='median'", "one of norm, value"),
    ("tbptt.chunk=0", "tbptt.chunk=0", "integer >= 1 or null"),
    ("nonfinite.policy=ignore", "nonfinite.policy='ignore'", "skip, stop, raise"),
    ("diagnostics.every_n_steps=0", "diagnostics.every_n_steps=0", "integer >= 1 or null"),
    ("diagnostics.horizon_factor=2", "diagnostics.horizon_factor=2", "(0, 1)"),
    ("cpu_keep_freed_memory=banana", "cpu_keep_freed_memory='banana'", "true or false"),
    ("cpu_flush_denormal=1", "cpu_flush_denormal=1", "true or false"),
]


@pytest.mark.parametrize("override,named,accepted", BAD_VALUES)
def test_bad_value_names_key_and_accepted_values(override, named, accepted):
    with pytest.raises(ConfigError) as error:
        validate_config(compose_config(override))
    message = str(error.value)
    assert named in message and accepted in message
    assert "\n" not in message


def test_rnn_nonlinearity():
    with pytest.raises(
        ConfigError, match=r"model.nonlinearity='softplus': expected one of tanh, relu, sigmoid"
    ):
        validate_config(compose_config("model=rnn", "model.nonlinearity=softplus"))


def test_inconsistent_init():
    with pytest.raises(ConfigError, match="model.init.spectral_radius"):
        validate_config(compose_config("model.init.recurrent=zeros", "model.init.spectral_radius=1.0"))
    with pytest.raises(ConfigError, match="model.init.forget_bias.*unless model.cell=lstm"):
        validate_config(compose_config("model=gru", "model.init.forget_bias=1.0"))


def test_default_config_is_valid():
    for model in ("rnn", "lstm", "gru"):
        for task in ("adding", "copy"):
            validate_config(compose_config(f"model={model}", f"task={task}"))


@pytest.mark.parametrize("override,group", [("model=transformer", "model"), ("task=sorting", "task")])
def test_unknown_group_option_lists_the_options(override, group):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as error:
        compose_config(override)
    message = str(error.value)
    assert f"Could not find '{group}/" in message
    assert "Available options" in message and ("lstm" in message or "adding" in message)


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigCompositionException, match="hiden_size"):
        compose_config("model.hiden_size=3")


def test_cli_fails_fast_with_one_line_and_writes_nothing(tmp_path, python):
    run_dir = tmp_path / "run"
    start = time.monotonic()
    result = subprocess.run(
        [python, "scripts/train.py", "model.hidden_size=0", f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("rnnflow:")]
    assert errors == ["rnnflow: invalid config: model.hidden_size=0: expected an integer >= 1"]
    assert elapsed < 60
    assert not (run_dir / "tb").exists() and not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model.init.forget_bias=warp"], "model.init.forget_bias='warp': expected a number, chrono or null"),
        (
            ["model.init.forget_bias=chrono", "model.init.chrono_max=2"],
            "model.init.chrono_max=2: expected a number > 2",
        ),
        (
            ["model.init.forget_bias=chrono", "task.seq_len=2"],
            "task.seq_len=2: expected > 2 for forget_bias=chrono",
        ),
    ],
)
def test_chrono_init_values(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate_config(compose_config("model=lstm", *overrides))
    validate_config(compose_config("model=lstm", "model.init.forget_bias=chrono"))
