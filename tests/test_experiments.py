"""Every conf/experiment/*.yaml: each sweep job composes and validates; one runs under debug=fast."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from conftest import CONF, ROOT, read_scalars
from hydra import compose, initialize_config_dir

from rnnflow.config import validate_config

EXPERIMENTS = sorted(path.stem for path in (ROOT / "conf" / "experiment").glob("*.yaml"))


def _compose(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=unused", *overrides], return_hydra_config=hydra)


def sweep_jobs(experiment: str) -> list[list[str]]:
    """The overrides of every job of ``python scripts/train.py -m experiment=<experiment>``."""
    params = _compose(f"experiment={experiment}", hydra=True).hydra.sweeper.params or {}
    axes = [[f"{key}={value.strip()}" for value in str(values).split(",")] for key, values in params.items()]
    return [list(job) for job in itertools.product(*axes)]


def test_every_experiment_is_listed():
    assert len(EXPERIMENTS) >= 7 and "cells_vs_length" in EXPERIMENTS


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_job_of_the_experiment_validates(experiment):
    jobs = sweep_jobs(experiment)
    assert jobs, f"experiment={experiment} sweeps nothing"
    for job in jobs:
        validate_config(_compose(f"experiment={experiment}", *job))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_under_debug_fast(experiment, tmp_path: Path):
    """The last job of the sweep (every swept key at its last value) runs 10 steps and logs."""
    from rnnflow.runtime.run import train

    job = sweep_jobs(experiment)[-1]
    cfg = _compose(
        f"experiment={experiment}",
        *job,
        "debug=fast",
        "trainer.enable_progress_bar=false",
        f"paths.output_dir={tmp_path}",
    )
    metrics = train(cfg)
    assert cfg.trainer.max_steps == 10
    scalars = read_scalars(tmp_path)
    assert [step for step, _ in scalars["train/loss"]][-1] == 9
    assert "val/loss" in metrics and "grad_flow/layer0/log10_ratio" in scalars
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
