"""Sweeps that survive a failing job, and say at the end which jobs failed and why.

In a sweep (``-m``) a job whose training raises does not stop the others: the job writes
its traceback to ``<job dir>/failure.txt`` and returns NaN to the sweeper. At the end of the
sweep :class:`SweepFailureSummary` (a Hydra callback) lists the failed jobs with the last
line of their error and exits with status 1. A single run still fails loudly.

:class:`SweepLaunchCheck` refuses, before the first job, a sweep whose jobs would use plain
multi-process ``ddp`` (its relaunched ranks would re-run the sweep; see
:mod:`rnnflow.runtime.devices`): one line, exit 2.
Sweeps that choose the strategy per job (``trainer=ddp,ddp_spawn``) are checked in each job.
With the SLURM launcher it also checks the jobs' request against the partition
(:func:`rnnflow.runtime.slurm.check_submission`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rnnflow.config import ConfigError
from rnnflow.runtime.devices import plain_ddp_sweep_message, relaunches_argv
from rnnflow.runtime.slurm import check_submission, is_slurm_launcher

FAILURE_FILE = "failure.txt"


def record_failure(job_dir: Path, report: str) -> Path:
    """Write a failed job's traceback (or message) to ``job_dir/failure.txt``."""
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / FAILURE_FILE
    path.write_text(report)
    return path


def failed_jobs(sweep_dir: Path) -> list[tuple[str, str]]:
    """``(job dir name, last line of its error)`` for every failed job of a sweep."""
    failures = []
    for path in sorted(sweep_dir.glob(f"*/{FAILURE_FILE}")):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        failures.append((path.parent.name, lines[-1] if lines else "(no message)"))
    return failures


class SweepFailureSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failures = failed_jobs(Path(config.hydra.sweep.dir))
        if not failures:
            return
        print(f"rnnflow: {len(failures)} sweep job(s) failed:", file=sys.stderr)
        for job, reason in failures:
            print(f"  {job}: {reason}", file=sys.stderr)
        raise SystemExit(1)


class SweepLaunchCheck(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
        if is_slurm_launcher(config):
            # What the jobs ask SLURM for, against the partition: nothing is submitted if it cannot run.
            try:
                check_submission(config)
            except ConfigError as error:
                print(f"rnnflow: invalid config: {error}", file=sys.stderr)
                raise SystemExit(2) from None
        # Hydra's submitit launcher starts one SLURM task per device: Lightning relaunches nothing.
        if relaunches_argv(config, cluster_managed="submitit" in launcher.lower()):
            print(f"rnnflow: invalid config: {plain_ddp_sweep_message(config)}", file=sys.stderr)
            raise SystemExit(2)
