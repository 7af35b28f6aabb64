"""Shared helpers: compose the Hydra config in-process, train, read TensorBoard back."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from tbparse import SummaryReader

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
# Small enough for 2 CPU cores: a run of a few steps takes ~1 s.
TINY = [
    "model.hidden_size=8",
    "task.seq_len=12",
    "task.batch_size=8",
    "task.val_batches=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
]


def compose_config(*overrides: str, output_dir: Path | None = None) -> DictConfig:
    """The composed ``train`` config with ``overrides`` (``paths.output_dir`` set when given)."""
    extra = [f"paths.output_dir={output_dir}"] if output_dir is not None else ["paths.output_dir=unused"]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=[*extra, *overrides])


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), …]}`` of a run's TensorBoard events."""
    frame = SummaryReader(str(Path(run_dir) / "tb")).scalars
    return {tag: list(zip(g.step, g.value, strict=True)) for tag, g in frame.groupby("tag")}


@pytest.fixture
def train_run(tmp_path: Path) -> Callable[..., tuple[dict[str, float], Path]]:
    """``train_run(*overrides, name="run")`` → (final metrics, run dir); tiny sizes by default."""
    from rnnflow.runtime.run import train

    def run(*overrides: str, name: str = "run") -> tuple[dict[str, float], Path]:
        out = tmp_path / name
        metrics = train(compose_config(*TINY, *overrides, output_dir=out))
        return metrics, out

    return run


@pytest.fixture
def python() -> str:
    return sys.executable
