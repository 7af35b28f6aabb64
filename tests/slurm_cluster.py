"""A real one-node SLURM cluster for the tests marked ``slurm`` (session-scoped fixture).

``scripts/local_slurm.sh up DIR`` starts munged, slurmctld and slurmd from the Debian packages
(``apt-get install slurmctld slurmd slurm-client munge``; ``.ci/run`` installs them) with a
``slurm.conf`` in a temporary directory and this machine's CPUs and memory, and waits until
``sinfo`` shows the node idle; ``down`` cancels the jobs and stops the daemons, and the fixture
checks that none is left. Where SLURM cannot start (not installed, not root, a daemon fails)
every ``slurm`` test is skipped with the reason in one line.

The cluster is reached through ``SLURM_CONF`` in the environment given to subprocesses
(:attr:`SlurmCluster.env`); this process's own environment is left alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "local_slurm.sh"
PARTITION = "local"
DAEMONS = ("munged", "slurmctld", "slurmd")


@dataclass
class SlurmCluster:
    dir: Path
    env: dict[str, str]
    partition: str = PARTITION

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60, check=check)

    def version(self) -> str:
        return self.run("sinfo", "--version").stdout.strip()

    def jobs(self) -> list[tuple[str, str]]:
        """``(job id, state)`` of the jobs SLURM still lists."""
        out = self.run("squeue", "--noheader", "--states=all", "--format=%i|%T").stdout
        return [tuple(line.split("|", 1)) for line in out.splitlines() if line.strip()]  # type: ignore[misc]

    def job_state(self, job_id: str) -> str:
        out = self.run("scontrol", "show", "job", job_id, check=False).stdout
        for field in out.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
        return "UNKNOWN"

    def wait_for_no_jobs(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not [j for j in self.jobs() if j[1] in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED")]:
                return
            time.sleep(0.5)
        raise AssertionError(f"jobs still queued after {timeout} s: {self.jobs()}")


def daemon_pids(directory: Path) -> dict[str, int]:
    """The pid of each daemon of the cluster in ``directory`` that is still alive."""
    alive = {}
    for name in DAEMONS:
        path = directory / f"{name}.pid"
        if not path.is_file():
            continue
        text = path.read_text().strip()
        if text.isdigit() and Path(f"/proc/{text}").exists():
            alive[name] = int(text)
    return alive


def start_cluster(directory: Path) -> tuple[SlurmCluster | None, str]:
    """Start the cluster in ``directory``: ``(cluster, "")`` or ``(None, one-line reason)``."""
    if os.geteuid() != 0:
        return None, "SLURM tests start slurmd, which needs root (run as root, e.g. in .ci/run)"
    done = subprocess.run(
        ["bash", str(SCRIPT), "up", str(directory)], capture_output=True, text=True, timeout=180
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.startswith("local_slurm:")]
        return None, (lines[-1] if lines else f"local_slurm.sh up failed ({done.returncode})")
    env = dict(os.environ, SLURM_CONF=str(directory / "slurm.conf"))
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin"
    return SlurmCluster(directory, env), ""


def stop_cluster(directory: Path) -> dict[str, int]:
    """Stop the cluster; returns the daemons still alive afterwards (none expected)."""
    subprocess.run(["bash", str(SCRIPT), "down", str(directory)], capture_output=True, text=True, timeout=120)
    return daemon_pids(directory)


@pytest.fixture(scope="session")
def slurm_cluster():
    directory = Path(tempfile.mkdtemp(prefix="rnnflow-slurm-"))
    cluster, reason = start_cluster(directory)
    if cluster is None:
        pytest.skip(f"SLURM cluster not started: {reason}")
    try:
        yield cluster
    finally:
        left = stop_cluster(directory)
        assert not left, f"SLURM daemons left running after teardown: {left} (logs in {directory})"
        shutil.rmtree(directory, ignore_errors=True)
