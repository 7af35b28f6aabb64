"""One live run per run dir: ``<run>/run.lock``, held while the run trains.

Two runs writing into one run dir mix silently: the checkpoint of one, the config record of the
other, TensorBoard curves that step back and forth. A run (or a resume into that run dir) holds
an exclusive ``flock`` on ``<run>/run.lock`` for as long as it trains; the file names the holder
(pid, host, start time) for the message a second run gets. The kernel releases a ``flock`` when
its process dies, however it dies (SIGKILL, OOM kill, node reboot), so a lock file left behind by
a dead run is stale by construction and the next run takes it over. Where the filesystem has no
``flock`` (some network mounts answer ENOLCK), the recorded pid decides on the same host, and a
lock of another host is respected until removed by hand.

Only rank 0 of a multi-process job locks (Lightning's DDP launcher re-runs the script for the
other ranks, into the same run dir).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import os
import socket
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from hydra.experimental.callback import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

LOCK_NAME = "run.lock"


class RunDirInUse(RuntimeError):
    """The run dir is held by another live run; the message is one line naming it."""


def _owner() -> str:
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return f"pid={os.getpid()} host={socket.gethostname()} started={now}\n"


def _parse(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split() if "=" in part)


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _in_use(run_dir: Path, owner: dict[str, str]) -> RunDirInUse:
    holder = (
        f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}, started {owner.get('started', '?')}"
    )
    return RunDirInUse(
        f"run dir {run_dir} is in use by a live run ({holder}): wait for it to end or stop it, "
        "or choose another hydra.run.dir"
    )


class RunDirLock:
    """``with RunDirLock(run_dir):`` run holding ``run_dir``; raises :class:`RunDirInUse` if it is held."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()

    def acquire(self) -> None:
        if rank_zero_only.rank != 0 or self._fd is not None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _parse(os.pread(fd, 4096, 0).decode(errors="replace"))
                os.close(fd)
                raise _in_use(self.run_dir, owner) from None
            except OSError as error:
                if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)
                    raise
                self._check_recorded_owner(fd)  # no flock here: decide by the recorded pid
            # A run that released the lock unlinks the file; if it did so between our open and
            # our flock, we hold a file no longer at that path: open it again.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _owner().encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def _check_recorded_owner(self, fd: int) -> None:
        owner = _parse(os.pread(fd, 4096, 0).decode(errors="replace"))
        pid = owner.get("pid", "")
        if not pid.isdigit() or int(pid) == os.getpid():
            return
        if owner.get("host") != socket.gethostname() or process_alive(int(pid)):
            os.close(fd)
            raise _in_use(self.run_dir, owner)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still holding it (see acquire)
        os.close(fd)


def check_run_dir_free(run_dir: str | os.PathLike) -> None:
    """Raise :class:`RunDirInUse` if a live run holds ``run_dir`` (without taking it)."""
    lock = RunDirLock(run_dir)
    if rank_zero_only.rank != 0 or not lock.path.is_file():
        return
    lock.acquire()
    lock.release()


class RunDirCheck(Callback):
    """Hydra callback: refuse a run into a live run's dir before Hydra rewrites its ``.hydra/`` record.

    Hydra writes ``<run>/.hydra/*.yaml`` before the task starts; :func:`rnnflow.runtime.run.train`
    takes the lock itself (this check only keeps the live run's record intact).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_run_dir_free(config.hydra.run.dir)
        except RunDirInUse as error:
            print(f"rnnflow: {error}", file=sys.stderr)
            sys.exit(2)
