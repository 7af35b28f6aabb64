"""Sizes that cannot fit are refused before allocating, with the estimate and the machine's memory."""

from __future__ import annotations

import resource
import subprocess

import pytest
from conftest import ROOT, compose_config

from rnnflow.config import ConfigError
from rnnflow.models import RecurrentNet
from rnnflow.runtime.build import build_model, build_task_from_config
from rnnflow.runtime.memory import GIB, _gib, check_memory, estimate_step_memory, parameter_count

MACHINE = (20 * GIB, 23 * GIB, "this machine")


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=rnn"],
        ["model=lstm", "model.num_layers=3", "model.layer_norm=true"],
        ["model=gru", "task=copy", "model.hidden_size=16"],
        ["model=rnn", "model.nonlinearity=sigmoid", "task=permutation", "model.num_layers=2"],
    ],
)
def test_parameter_count_is_the_model_s(overrides):
    cfg = compose_config(*overrides)
    task = build_task_from_config(cfg)
    model: RecurrentNet = build_model(cfg, task)
    expected = sum(p.numel() for p in model.parameters())
    counted = parameter_count(
        cfg.model.cell,
        task.input_size,
        cfg.model.hidden_size,
        cfg.model.num_layers,
        task.output_size,
        cfg.model.layer_norm,
    )
    assert counted == expected


def test_estimate_scales_with_batch_length_and_layers():
    base = compose_config()
    task = build_task_from_config(base)
    one = estimate_step_memory(base, task)
    double_batch = compose_config("task.batch_size=128")
    assert estimate_step_memory(double_batch, task).activations == 2 * one.activations
    four_layers = compose_config("model.num_layers=4")
    grown = estimate_step_memory(four_layers, task).activations
    # (4g + 4)·H per layer plus the 2F input term: four layers are a little under four times one
    assert 3.9 * one.activations < grown < 4 * one.activations


@pytest.mark.parametrize(
    "overrides,needs",
    [
        (["task.batch_size=10000000"], "TiB"),
        (["model.num_layers=1000"], "GiB"),
    ],
)
def test_too_big_is_refused_with_estimate_and_machine_memory(overrides, needs):
    cfg = compose_config(*overrides)
    task = build_task_from_config(cfg)
    estimate = estimate_step_memory(cfg, task)
    available = (estimate.total // 2, 23 * GIB, "this machine")
    with pytest.raises(ConfigError) as error:
        check_memory(cfg, task, available=available)
    message = str(error.value)
    assert "one training step needs about" in message and needs in message
    assert f"this machine has {_gib(estimate.total // 2)} available of 23.0 GiB" in message
    assert overrides[0] in message and "\n" not in message


def test_default_sizes_fit():
    for cell in ("rnn", "lstm", "gru"):
        cfg = compose_config(f"model={cell}")
        estimate = check_memory(cfg, build_task_from_config(cfg), available=MACHINE)
        assert estimate.total < 100 * 2**20


def test_cpu_ddp_processes_each_need_a_step():
    cfg = compose_config("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=4")
    task = build_task_from_config(cfg)
    one = estimate_step_memory(cfg, task).total
    check_memory(cfg, task, available=(4 * one + 1, 4 * one + 1, "this machine"))
    with pytest.raises(ConfigError, match="needs about"):
        check_memory(cfg, task, available=(4 * one - 1, 4 * one, "this machine"))


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_estimate_is_below_the_measured_peak(tmp_path, python, cell):
    """The estimate does not refuse runs that fit: it stays below a step's measured peak memory growth."""
    script = (
        "import resource, sys; sys.path.insert(0, 'tests')\n"
        "from conftest import compose_config\n"
        "from rnnflow.runtime.run import train\n"
        "import lightning\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"train(compose_config('model={cell}', 'task.batch_size=2048', 'trainer.max_steps=2', "
        "'trainer.val_check_interval=2', 'task.val_batches=1', 'trainer.enable_progress_bar=false', "
        f"output_dir='{tmp_path}'))\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)\n"
    )
    result = subprocess.run([python, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    grown = int(result.stdout.strip().splitlines()[-1])
    cfg = compose_config(f"model={cell}", "task.batch_size=2048")
    estimate = estimate_step_memory(cfg, build_task_from_config(cfg)).total
    assert estimate < grown, (estimate, grown)


def test_cli_batch_size_refused_fast(tmp_path, python):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = subprocess.run(
        [python, str(ROOT / "scripts" / "train.py"), "task.batch_size=10000000"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("rnnflow: invalid config: task.batch_size=10000000, T=50, model.hidden_size=64")
    assert "TiB" in line and "this machine has" in line
    assert list(cwd.iterdir()) == []
    # refused before allocating: the process never grew beyond imports (~0.5 GB), far from the 6.7 GB
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < max(before, 2 * 2**20)
