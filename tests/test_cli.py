"""One real ``python scripts/train.py`` run, read back from its TensorBoard events."""

from __future__ import annotations

import subprocess

from conftest import ROOT, TINY, read_scalars


def test_train_script_writes_tensorboard_and_checkpoint(tmp_path, python):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            python,
            "scripts/train.py",
            *TINY,
            "model=gru",
            "task=copy",
            "trainer.max_steps=3",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    tags = read_scalars(run_dir)
    assert [s for s, _ in tags["train/loss"]] == [0, 1, 2]
    assert {"val/loss", "val/accuracy", "val/baseline_loss", "grad_flow/layer0/log10_ratio"} <= set(tags)
    assert {"spectral/layer0/r/radius", "spectral/layer0/z/radius", "spectral/layer0/n/radius"} <= set(tags)
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / ".hydra" / "config.yaml").exists()
