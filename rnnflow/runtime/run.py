"""One training run from a composed config: validate, lock the run dir, build, fit, return the metrics."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rnnflow.config import validate_config
from rnnflow.runtime.build import build_datamodule, build_module, build_task_from_config, build_trainer
from rnnflow.runtime.checkpoint import AtomicCheckpointIO
from rnnflow.runtime.checkpoint_check import check_checkpoint
from rnnflow.runtime.devices import check_launch, pin_job_to_gpu
from rnnflow.runtime.host_settings import HostSettings
from rnnflow.runtime.memory import check_memory
from rnnflow.runtime.resume import check_resume
from rnnflow.runtime.resume_dir import log_into, resume_run_dir
from rnnflow.runtime.run_end import HParamsSummary, ValidateAtEnd, hparam_columns
from rnnflow.runtime.run_lock import RunDirLock
from rnnflow.runtime.slurm import check_job, requeued_checkpoint
from rnnflow.runtime.summary import route_lightning_logs, summary_callback


def train(cfg: DictConfig, multirun: bool = False, job_number: int | None = None) -> dict[str, float]:
    """Train the experiment ``cfg`` describes; returns the final ``trainer.callback_metrics``.

    Raises :class:`rnnflow.config.ConfigError` before anything is built if a value is invalid,
    :class:`rnnflow.runtime.run_lock.RunDirInUse` if a live run holds the run dir.
    ``multirun``/``job_number``: this run is job ``job_number`` of a Hydra sweep.
    """
    route_lightning_logs()
    validate_config(cfg)
    check_launch(cfg, multirun)
    check_job(cfg)
    # A requeued SLURM job (pre-empted, signalled before its time limit) continues its own run.
    requeued = requeued_checkpoint(cfg)
    if requeued is not None:
        print(f"rnnflow: requeued SLURM job: resuming from {requeued}", file=sys.stderr)
        cfg.ckpt_path = str(requeued)
    # A resume continues its checkpoint's run dir (same TensorBoard run) unless it is a branch.
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None
    run_dir = resume_run_dir(cfg.get("ckpt_path"), overrides)
    if run_dir is not None:
        cfg.paths.output_dir = str(run_dir)
    if cfg.get("ckpt_path") is not None:
        check_resume(cfg, cfg.ckpt_path)
    launch_dir = HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else cfg.paths.output_dir
    with RunDirLock(cfg.paths.output_dir), log_into(Path(cfg.paths.output_dir), Path(launch_dir)):
        return _fit(cfg, multirun, job_number, overrides)


def _fit(
    cfg: DictConfig, multirun: bool, job_number: int | None, overrides: list[str] | None
) -> dict[str, float]:
    if multirun and job_number is not None and torch.cuda.is_available():
        pin_job_to_gpu(cfg, job_number, torch.cuda.device_count())
    host = HostSettings(
        flush_denormal=bool(cfg.get("cpu_flush_denormal", True)),
        keep_freed_memory=bool(cfg.get("cpu_keep_freed_memory", True)),
    )
    host.apply()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task = build_task_from_config(cfg)
    check_memory(cfg, task)  # a step that cannot fit is refused before anything is allocated
    module = build_module(cfg, task)
    if cfg.get("ckpt_path") is not None:  # one line for a checkpoint that cannot resume this module
        check_checkpoint(cfg.ckpt_path, module, dict(module.hparams))
    datamodule = build_datamodule(cfg, task)
    hparams = HParamsSummary(hparam_columns(cfg, overrides), run_dir=cfg.paths.output_dir)
    trainer = build_trainer(
        cfg,
        extra_callbacks=[host, ValidateAtEnd(), hparams],
        plugins=[AtomicCheckpointIO()],  # every checkpoint write atomic
    )
    # Last: its summary reads what the other callbacks wrote at the end (clip counts, profiles).
    trainer.callbacks.append(summary_callback(cfg, overrides))
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    return {name: float(value) for name, value in trainer.callback_metrics.items()}
