"""SLURM: what a sweep job asks the scheduler for, checked before submission; requeue and resume.

Sweeps reach SLURM through Hydra's submitit launcher (``hydra/launcher=slurm``): one SLURM job
per sweep job, one task per device (``tasks_per_node == trainer.devices``), so that Lightning's
SLURM environment starts DDP across the job's tasks without relaunching anything.

**Before submission** (:func:`check_submission`, called by the sweep's launch check) the request
is compared with the partition as ``sinfo`` reports it: CPUs (``cpus_per_task · tasks_per_node``)
and memory (``mem_gb``) per node, GPUs (``gpus_per_node``, asked for only where the trainer uses
GPUs: :func:`gpus_per_node`) against the partition's ``gres``, and tasks against devices. A
request that cannot run is refused in one line naming the keys, instead of ``sbatch`` failing
inside the launcher or a job pending forever.

**Pre-emption and time limits** follow submitit's protocol: the launcher asks SLURM for
``--signal=USR2@<signal_delay_s>`` (a warning that many seconds before the time limit; a
pre-empting scheduler or ``scancel --signal=USR2`` sends the same) and the requeued job re-runs
the same pickled Hydra job (the launcher's ``checkpoint()``), in the same job dir. rnnflow adds
the state: :class:`rnnflow.runtime.interrupt.InterruptCheckpoint` treats that signal like SIGTERM
(stop before the next batch on all ranks, save ``checkpoints/last.ckpt``) and then hands the
job back to SLURM (:meth:`SlurmJob.requeue`): submitit's own handler where submitit installed
one (it counts time-outs against ``max_num_timeout``), else ``scontrol requeue``. A SIGTERM
(``scancel --signal=TERM``, ``scontrol requeue``, pre-emption) saves and requeues the same way;
where SLURM is ending the job itself (a cancelled or timed-out job) the requeue is refused by
SLURM and the job ends with its checkpoint saved. On restart (``SLURM_RESTART_COUNT`` ≥ 1) the
job resumes from its own run dir's ``last.ckpt`` (:func:`requeued_checkpoint`).

Why not Lightning's ``SLURMEnvironment(auto_requeue=True)``: it saves ``hpc_ckpt_N.ckpt`` from
inside the signal handler, in the middle of a batch (a step can be trained twice on resume, and
under DDP its collectives run inside a handler), beside rnnflow's own checkpoints. It is turned
off (:func:`slurm_plugins`); Lightning still reads the ranks and the master address from SLURM.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnflow.config import ConfigError
from rnnflow.runtime.devices import GPU_ACCELERATORS, device_count

log = logging.getLogger(__name__)

SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def gpus_per_node(accelerator: Any, devices: Any) -> int | None:
    """GPUs a SLURM job asks for: ``trainer.devices`` for a GPU trainer, None (no ``gres``) otherwise.

    ``accelerator: auto`` (``trainer=ddp``) counts as GPUs: on a cluster it is what Lightning picks
    where GPUs are; a CPU job says ``trainer.accelerator=cpu``. ``devices: -1``/``auto`` gives None
    for the check before submission to refuse.
    """
    if str(accelerator) not in GPU_ACCELERATORS:
        return None
    return device_count(devices)


# --------------------------------------------------------------------------- before submission


@dataclass(frozen=True)
class NodeShape:
    """One kind of node of a partition, as ``sinfo`` reports it."""

    cpus: int
    memory_mb: int
    gpus: int


def partition_nodes(partition: str | None) -> tuple[str, list[NodeShape]] | None:
    """``(partition name, node shapes)`` from ``sinfo``; None where SLURM's tools are not reachable.

    ``partition`` None: the cluster's default partition. Raises :class:`ConfigError` if the
    partition does not exist.
    """
    if shutil.which("sinfo") is None:
        return None
    try:
        listing = subprocess.run(
            ["sinfo", "--noheader", "--format=%P|%c|%m|%G"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows: dict[str, list[NodeShape]] = {}
    default = None
    for line in listing.splitlines():
        name, cpus, memory, gres = (line.split("|") + ["", "", "", ""])[:4]
        if name.endswith("*"):
            name = name[:-1]
            default = default or name
        rows.setdefault(name, []).append(
            NodeShape(_leading_int(cpus), _leading_int(memory), _gres_gpus(gres))
        )
    chosen = partition if partition is not None else default
    if chosen not in rows:
        known = ", ".join(sorted(rows)) or "none"
        if partition is None:
            raise ConfigError(f"hydra.launcher.partition=null: no default partition (sinfo lists: {known})")
        raise ConfigError(f"hydra.launcher.partition={partition!r}: no such partition (sinfo lists: {known})")
    return chosen, rows[chosen]


def _leading_int(text: str) -> int:
    digits = ""
    for char in text.strip():
        if not char.isdigit():
            break
        digits += char
    return int(digits) if digits else 0


def _gres_gpus(gres: str) -> int:
    """GPUs in a ``sinfo %G`` field such as ``gpu:a100:4(S:0-1),shard:8`` (0 for ``(null)``)."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu":
            total += _leading_int(parts[-1]) if len(parts) > 1 else 1
    return total


def check_tasks_match_devices(tasks_per_node: Any, devices: Any, nodes: Any, num_nodes: Any) -> None:
    """One SLURM task per device and per node: refuse a mismatch in one line naming both keys."""
    count = device_count(devices)
    if count is None:
        raise ConfigError(
            f"trainer.devices={devices!r} under SLURM: expected a device count equal to "
            f"hydra.launcher.tasks_per_node={tasks_per_node!r} (one SLURM task per device)"
        )
    if int(tasks_per_node) != count:
        raise ConfigError(
            f"hydra.launcher.tasks_per_node={tasks_per_node} and trainer.devices={devices!r}: expected "
            "equal (SLURM starts one task per device; Lightning's SLURM environment runs DDP across them)"
        )
    if int(nodes) != int(num_nodes or 1):
        raise ConfigError(f"hydra.launcher.nodes={nodes} and trainer.num_nodes={num_nodes}: expected equal")


def check_submission(config: DictConfig, nodes: list[NodeShape] | None = None, name: str = "") -> None:
    """Refuse, before anything is submitted, a SLURM request that cannot run (:class:`ConfigError`).

    ``config`` is the sweep's primary config (``hydra.launcher`` resolved against it). ``nodes``
    (with the partition ``name``) replaces the ``sinfo`` query, for tests; where ``sinfo`` cannot
    be reached only the tasks/devices match is checked.
    """
    launcher = config.hydra.launcher
    check_tasks_match_devices(
        launcher.tasks_per_node,
        OmegaConf.select(config, "trainer.devices", default=1),
        launcher.nodes,
        OmegaConf.select(config, "trainer.num_nodes", default=1),
    )
    gpus = launcher.get("gpus_per_node")
    accelerator = OmegaConf.select(config, "trainer.accelerator", default="cpu")
    if str(accelerator) in GPU_ACCELERATORS and gpus is None and launcher.get("gres") is None:
        devices = OmegaConf.select(config, "trainer.devices", default=1)
        raise ConfigError(
            f"trainer.devices={devices!r} with trainer.accelerator={accelerator!r} under SLURM: expected a "
            "GPU count (hydra.launcher.gpus_per_node is taken from it), or trainer.accelerator=cpu"
        )
    if nodes is None:
        found = partition_nodes(launcher.get("partition"))
        if found is None:
            return
        name, nodes = found
    tasks = int(launcher.tasks_per_node)
    cpus = int(launcher.get("cpus_per_task") or 1) * tasks
    most_cpus = max(node.cpus for node in nodes)
    if cpus > most_cpus:
        raise ConfigError(
            f"hydra.launcher.cpus_per_task={launcher.get('cpus_per_task')} x tasks_per_node={tasks} = {cpus} "
            f"CPUs per node: partition {name!r} has nodes of at most {most_cpus} CPUs"
        )
    mem_gb = launcher.get("mem_gb")
    most_memory = max(node.memory_mb for node in nodes)
    if mem_gb is not None and int(mem_gb) * 1024 > most_memory:
        raise ConfigError(
            f"hydra.launcher.mem_gb={mem_gb}: partition {name!r} has nodes of at most "
            f"{most_memory} MB ({most_memory // 1024} GB)"
        )
    most_gpus = max(node.gpus for node in nodes)
    if gpus and gpus > most_gpus:
        where = f"at most {most_gpus} GPUs per node" if most_gpus else "no GPUs (no gpu gres)"
        raise ConfigError(
            f"hydra.launcher.gpus_per_node={gpus} (trainer.accelerator={accelerator!r}, "
            f"trainer.devices={OmegaConf.select(config, 'trainer.devices')!r}): partition {name!r} has "
            f"{where}; use trainer.accelerator=cpu or a GPU partition"
        )


def is_slurm_launcher(config: DictConfig) -> bool:
    return str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "") == SLURM_LAUNCHER


# --------------------------------------------------------------------------- inside a job


def check_job(cfg: DictConfig, environ: dict[str, str] | None = None) -> None:
    """Inside a SLURM job with tasks (``srun``), refuse ``trainer.devices`` ≠ the job's tasks per node.

    The check before submission sees only the primary config; a sweep over ``trainer.devices``
    is caught here, in one line, before Lightning starts any collective.
    """
    env = os.environ if environ is None else environ
    per_node = env.get("SLURM_NTASKS_PER_NODE")
    if "SLURM_STEP_ID" not in env or per_node is None or not per_node.isdigit():
        return
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    check_tasks_match_devices(int(per_node), devices, 1, 1)


def slurm_plugins() -> list[Any]:
    """Lightning plugins for a run inside SLURM: its SLURM environment without auto-requeue."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def requeued_checkpoint(cfg: DictConfig, environ: dict[str, str] | None = None) -> Path | None:
    """The run dir's ``checkpoints/last.ckpt`` when this is a requeued SLURM job that saved one.

    A requeued job re-runs the same Hydra job in the same job dir; with no ``ckpt_path`` of its
    own it continues from where the previous start of the job saved.
    """
    env = os.environ if environ is None else environ
    restarts = env.get("SLURM_RESTART_COUNT", "0")
    if cfg.get("ckpt_path") is not None or not restarts.isdigit() or int(restarts) < 1:
        return None
    path = Path(str(cfg.paths.output_dir)) / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


@dataclass
class SlurmJob:
    """The SLURM batch job this process runs in."""

    job_id: str
    rank: int

    @classmethod
    def current(cls, environ: dict[str, str] | None = None) -> SlurmJob | None:
        env = os.environ if environ is None else environ
        job_id = env.get("SLURM_JOB_ID")
        if not job_id or env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
            return None
        return cls(job_id=job_id, rank=int(env.get("SLURM_PROCID", "0")))

    @staticmethod
    def warning_signals() -> tuple[signal.Signals, ...]:
        """Signals that announce pre-emption or the time limit: submitit's (USR2 unless
        ``SUBMITIT_PREEMPT_SIGNAL`` says otherwise) and USR1 (``sbatch --signal=USR1@N``)."""
        name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
        submitit_signal = getattr(signal, "SIG" + name, signal.SIGUSR2)
        return tuple(dict.fromkeys((submitit_signal, signal.SIGUSR1)))

    def requeue(self, signum: int, previous_handler: Callable[..., Any] | Any = None) -> None:
        """Hand the job back to SLURM after its checkpoint was saved (rank 0 only; others return).

        ``previous_handler``: the handler the signal had before rnnflow's. submitit's pre-emption
        handler is called as if the signal had just come, now that the state is saved: it
        re-pickles the Hydra job, requeues it (or refuses after ``max_num_timeout`` time-outs)
        and exits. Otherwise ``scontrol requeue`` runs; SLURM refuses it for a job it is ending
        itself (cancelled, timed out, already being requeued), which is fine.
        """
        if self.rank != 0:
            return
        if _is_submitit_handler(previous_handler, "checkpoint_and_try_requeue"):
            print(f"rnnflow: handing job {self.job_id} to submitit to requeue it", file=sys.stderr)
            previous_handler(signum, None)
            return
        done = subprocess.run(
            ["scontrol", "requeue", self.job_id], capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode == 0:
            print(f"rnnflow: requeued SLURM job {self.job_id}", file=sys.stderr)
        else:
            lines = (done.stderr or done.stdout).strip().splitlines()
            reason = lines[-1] if lines else "scontrol failed"
            print(f"rnnflow: SLURM job {self.job_id} not requeued ({reason})", file=sys.stderr)


def _is_submitit_handler(handler: Any, name: str) -> bool:
    owner = getattr(handler, "__self__", None)
    return (
        owner is not None
        and type(owner).__module__.startswith("submitit")
        and getattr(handler, "__name__", "") == name
    )


def register_resolver() -> None:
    if not OmegaConf.has_resolver("slurm_gpus"):
        OmegaConf.register_new_resolver("slurm_gpus", gpus_per_node)
