"""One real ``python scripts/train.py`` run, read back from its TensorBoard events."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, TINY, read_scalars


def train_script(python: str, run_dir: Path, *overrides: str) -> None:
    """``python scripts/train.py`` with the tiny config and ``overrides``, writing into ``run_dir``."""
    command = [python, "scripts/train.py", *TINY, *overrides, f"hydra.run.dir={run_dir}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_train_script_writes_tensorboard_and_checkpoint(tmp_path, python):
    run_dir = tmp_path / "run"
    train_script(python, run_dir, "model=gru", "task=copy", "trainer.max_steps=3")
    tags = read_scalars(run_dir)
    assert [s for s, _ in tags["train/loss"]] == [0, 1, 2]
    assert {"val/loss", "val/accuracy", "val/baseline_loss", "grad_flow/layer0/log10_ratio"} <= set(tags)
    assert {"spectral/layer0/r/radius", "spectral/layer0/z/radius", "spectral/layer0/n/radius"} <= set(tags)
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / ".hydra" / "config.yaml").exists()


def test_csv_logger_gets_every_rnnflow_scalar(tmp_path, python):
    """``logger=[tensorboard,csv]``: the same rnnflow scalars in metrics.csv as in the event file."""
    run_dir = tmp_path / "run"
    train_script(
        python,
        run_dir,
        "model=lstm",
        "trainer.max_steps=4",
        "clip.max_norm=0.5",
        "diagnostics.every_n_steps=2",
        "diagnostics.spectral_every_n_steps=2",
        "logger=[tensorboard,csv]",
    )
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    columns = set(rows[0])
    tags = read_scalars(run_dir)
    rnnflow_tags = {t for t in tags if t.split("/")[0] in ("grad_flow", "spectral", "clip")}
    assert {"grad_flow/layer0/log10_ratio", "spectral/layer0/f/radius", "clip/events"} <= rnnflow_tags
    assert rnnflow_tags <= columns
    logged = [
        (int(r["step"]), float(r["grad_flow/layer0/log10_ratio"]))
        for r in rows
        if r["grad_flow/layer0/log10_ratio"]
    ]
    assert logged == [(s, pytest.approx(v, rel=1e-6)) for s, v in tags["grad_flow/layer0/log10_ratio"]]
