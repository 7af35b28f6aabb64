"""Launch checks and device placement of a job, decided before anything is built.

* A Hydra sweep (``-m``) whose jobs use plain ``strategy: ddp`` on several processes is
  refused: Lightning relaunches ``sys.argv`` for every extra rank, and the relaunched
  process re-runs the whole sweep (rank 1 would start every job again). Sweeps whose jobs use several devices
  use ``ddp_spawn``. A cluster that starts the ranks itself (SLURM through Hydra's submitit
  launcher, ``torchrun``) is fine: Lightning then relaunches nothing.
* ``trainer.accelerator=gpu`` (``trainer=gpu``) where torch sees no CUDA GPU, or more GPUs than the
  machine has, is refused in one line that says what to use instead.
* In a sweep on a machine with several GPUs, Hydra's launchers do not spread jobs over the
  GPUs. A job that uses ``d`` GPUs of ``n`` is given the contiguous group
  ``g·d … g·d + d - 1`` with ``g = job number mod ⌊n / d⌋``, so that ``⌊n / d⌋`` parallel
  jobs (``hydra/launcher=parallel``) run on disjoint GPUs.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rnnflow.config import ConfigError

GPU_ACCELERATORS = ("gpu", "cuda", "auto")


def gpus_for_job(job_number: int, gpu_count: int, devices_per_job: int = 1) -> list[int]:
    """GPU indices of sweep job ``job_number``: round-robin over groups of ``devices_per_job`` GPUs."""
    if gpu_count < 1 or devices_per_job < 1:
        raise ValueError("gpus_for_job needs at least one GPU and one device per job")
    if devices_per_job > gpu_count:
        raise ValueError(f"a job on {devices_per_job} GPUs does not fit on {gpu_count}")
    group = job_number % (gpu_count // devices_per_job)
    return list(range(group * devices_per_job, (group + 1) * devices_per_job))


def gpu_for_job(job_number: int, gpu_count: int) -> int:
    """The GPU index of a one-GPU sweep job: ``job_number mod gpu_count``."""
    return gpus_for_job(job_number, gpu_count)[0]


def device_count(devices: Any) -> int | None:
    """How many devices ``trainer.devices`` asks for (None: ``-1``/``"auto"``, decided at run time)."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return None if devices < 0 else devices
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    if isinstance(devices, str):
        text = devices.strip()
        if text.lstrip("-").isdigit():
            return device_count(int(text))
        if "," in text:
            return len([part for part in text.split(",") if part.strip()])
    return None


def cluster_starts_ranks() -> bool:
    """Whether the processes of this run were started by a cluster (SLURM tasks, torchrun)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    return SLURMEnvironment.detect() or TorchElasticEnvironment.detect()


def relaunches_argv(cfg: DictConfig, cluster_managed: bool = False) -> bool:
    """Whether Lightning would re-run ``sys.argv`` for extra ranks (plain ddp, >1 process, no cluster)."""
    strategy = OmegaConf.select(cfg, "trainer.strategy", default="auto")
    if strategy != "ddp" or cluster_managed:
        return False
    devices = device_count(OmegaConf.select(cfg, "trainer.devices", default=1))
    nodes = OmegaConf.select(cfg, "trainer.num_nodes", default=1) or 1
    return devices is None or devices * nodes > 1


def plain_ddp_sweep_message(cfg: DictConfig) -> str:
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    return (
        f"trainer.strategy='ddp' with trainer.devices={devices!r}: expected trainer=ddp_spawn (or "
        "trainer.devices=1) in a sweep (-m); plain ddp relaunches the whole sweep on every rank"
    )


def check_accelerator(cfg: DictConfig, gpu_count: int | None = None) -> None:
    """Raise :class:`ConfigError` if ``trainer.accelerator``/``devices`` ask for GPUs this machine lacks.

    ``gpu_count``: the CUDA GPUs torch sees (default: ``torch.cuda.device_count()`` where CUDA is
    available, which does not initialise CUDA).
    """
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default="cpu")
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "trainer.accelerator='mps': this machine has no Apple GPU (MPS); use trainer=cpu, or "
            "trainer.accelerator=auto to take a GPU where there is one"
        )
    if accelerator not in ("gpu", "cuda"):
        return
    if gpu_count is None:
        gpu_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpu_count == 0:
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise ConfigError(
            f"trainer.accelerator={accelerator!r}: torch sees no CUDA GPU here (torch {torch.__version__}, "
            f"{build}); use trainer=cpu (or trainer.accelerator=cpu), or trainer.accelerator=auto to take "
            "a GPU where there is one"
        )
    wanted = device_count(devices)
    indices = list(devices) if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices) else []
    if isinstance(devices, str) and "," in devices:
        indices = [int(part) for part in devices.split(",") if part.strip()]
    if (wanted is not None and wanted > gpu_count) or any(index >= gpu_count for index in indices):
        raise ConfigError(
            f"trainer.devices={devices!r}: this machine has {gpu_count} GPU{'s' if gpu_count > 1 else ''} "
            f"(indices 0..{gpu_count - 1}); expected at most {gpu_count}, or -1 for all of them"
        )


def check_launch(cfg: DictConfig, multirun: bool, cluster_managed: bool | None = None) -> None:
    """Raise :class:`ConfigError` for GPUs that are not there (:func:`check_accelerator`), and for a
    sweep job that would relaunch the sweep (plain multi-process ddp)."""
    check_accelerator(cfg)
    if not multirun:
        return
    if cluster_managed is None:
        cluster_managed = cluster_starts_ranks()
    if relaunches_argv(cfg, cluster_managed):
        raise ConfigError(plain_ddp_sweep_message(cfg))


def pin_job_to_gpu(
    cfg: DictConfig, job_number: int, gpu_count: int, cluster_managed: bool | None = None
) -> list[int] | None:
    """In a sweep, set ``trainer.devices`` to this job's GPUs (:func:`gpus_for_job`); returns them.

    Nothing is changed (None) on the CPU, with explicit GPU indices, ``devices: -1``/``auto``,
    when a job takes all the GPUs, and where a cluster assigns the devices (SLURM, torchrun).
    """
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default="cpu")
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    if accelerator not in GPU_ACCELERATORS or isinstance(devices, bool) or not isinstance(devices, int):
        return None
    if devices < 1 or devices * 2 > gpu_count:
        return None
    if cluster_managed is None:
        cluster_managed = cluster_starts_ranks()
    if cluster_managed:
        return None
    indices = gpus_for_job(job_number, gpu_count, devices)
    cfg.trainer.devices = indices
    return indices
