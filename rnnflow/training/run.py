"""One training run from a composed config: validate, build, fit, return the final metrics."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig

from rnnflow.config import ConfigError, validate_config
from rnnflow.training.build import build_datamodule, build_module, build_task_from_config, build_trainer
from rnnflow.training.devices import check_launch, pin_job_to_gpu
from rnnflow.training.resume import ContinuousResumeStep
from rnnflow.training.run_end import HParamsSummary, ValidateAtEnd


def resume_run_dir(ckpt_path: str | None) -> Path | None:
    """The run dir a checkpoint belongs to (``<run>/checkpoints/<name>.ckpt``), if it has one.

    A resumed run writes into that dir, so that TensorBoard shows the original and the resumed
    part as one run (a new event file in the same ``tb/``) and ``last.ckpt`` stays in one place.
    """
    if ckpt_path is None:
        return None
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={ckpt_path!r}: expected an existing checkpoint file")
    run_dir = path.parent.parent
    return run_dir if path.parent.name == "checkpoints" and (run_dir / "tb").is_dir() else None


def train(cfg: DictConfig, multirun: bool = False, job_number: int | None = None) -> dict[str, float]:
    """Train the experiment ``cfg`` describes; returns the final ``trainer.callback_metrics``.

    Raises :class:`rnnflow.config.ConfigError` before anything is built if a value is invalid.
    ``multirun``/``job_number``: this run is job ``job_number`` of a Hydra sweep.
    """
    validate_config(cfg)
    check_launch(cfg, multirun)
    run_dir = resume_run_dir(cfg.get("ckpt_path"))
    if run_dir is not None:
        cfg.paths.output_dir = str(run_dir)
    if multirun and job_number is not None and torch.cuda.is_available():
        pin_job_to_gpu(cfg, job_number, torch.cuda.device_count())
    if cfg.get("cpu_flush_denormal", True):
        # Vanishing gradients underflow into subnormal floats, which the CPU handles
        # ~2.7x slower (DESIGN fact 4); flushing them to zero changes no visible result.
        torch.set_flush_denormal(True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task = build_task_from_config(cfg)
    module = build_module(cfg, task)
    datamodule = build_datamodule(cfg, task)
    trainer = build_trainer(
        cfg, extra_callbacks=[ContinuousResumeStep(), ValidateAtEnd(), HParamsSummary(module.hparams)]
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    return {name: float(value) for name, value in trainer.callback_metrics.items()}
