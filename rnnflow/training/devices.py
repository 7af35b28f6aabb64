"""Launch checks and device placement of a job, decided before anything is built.

* A Hydra sweep (``-m``) with ``strategy: ddp`` is refused: Lightning relaunches
  ``sys.argv`` for every extra rank, and the relaunched process re-runs the whole sweep
  (DESIGN fact 8). Sweeps whose jobs use several devices use ``ddp_spawn``.
* In a sweep on a machine with several GPUs, Hydra's launchers do not spread jobs over the
  GPUs; a single-GPU job is pinned to GPU ``job number mod GPU count`` so that parallel jobs
  (``hydra/launcher=parallel``) run on different GPUs.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from rnnflow.config import ConfigError


def gpu_for_job(job_number: int, gpu_count: int) -> int:
    """The GPU index of sweep job ``job_number`` when jobs are spread round-robin over ``gpu_count``."""
    if gpu_count < 1:
        raise ValueError("gpu_for_job needs at least one GPU")
    return job_number % gpu_count


def check_launch(cfg: DictConfig, multirun: bool) -> None:
    strategy = OmegaConf.select(cfg, "trainer.strategy", default="auto")
    if multirun and strategy == "ddp":
        raise ConfigError(
            "trainer.strategy='ddp': expected ddp_spawn (or one device per job) in a sweep (-m); "
            "plain ddp relaunches the whole sweep on every rank"
        )


def pin_job_to_gpu(cfg: DictConfig, job_number: int, gpu_count: int) -> int | None:
    """In a sweep, set ``trainer.devices = [k]`` for a one-GPU job; returns k (None if not pinned)."""
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default="cpu")
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    if accelerator not in ("gpu", "cuda", "auto") or devices != 1 or gpu_count < 2:
        return None
    index = gpu_for_job(job_number, gpu_count)
    cfg.trainer.devices = [index]
    return index
