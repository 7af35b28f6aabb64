"""Checkpoints a run can always resume from: written often, atomically, and only of a good state.

Two components, each with one concern:

* :class:`AtomicCheckpointIO`, Lightning's ``CheckpointIO`` plugin, makes every
  ``trainer.save_checkpoint`` to a local path atomic: the bytes go to a temporary file in the
  same directory, which is flushed and ``fsync``-ed, then renamed over the target
  (``os.replace``, atomic on POSIX within one filesystem), and the directory is ``fsync``-ed so
  that the rename survives a power loss. A process killed at any moment leaves either the old
  file or the new one, never a partial one; a failed write (a full disk) removes its temporary
  file and raises :class:`CheckpointWriteError` with one line, the old file intact.
* :class:`RunCheckpoint`, a Lightning ``Checkpoint`` callback, decides when to save and whether a
  state is good enough to keep, and keeps exactly one file, ``<dirpath>/last.ckpt``: the newest
  good state. It saves at the end of a training batch every ``every_n_steps`` optimizer steps
  (``trainer.global_step``, what ``trainer.max_steps`` counts), at the end of every batch that a
  validation follows, at the last batch, and when asked (:meth:`RunCheckpoint.request_save`:
  Ctrl-C, SIGTERM).

**Where a save happens.** Always at the end of a training batch, after every other callback's
``on_train_batch_end`` (Lightning runs ``Checkpoint`` callbacks last). That is the one point at
which Lightning's loops restore exactly, whatever follows: a resume increments the batch
counters once, so the first resumed batch is logged at the next TensorBoard step and draws the
next batch of the data stream; a validation that followed the save is not repeated. A save
after a validation, or at the start of a batch, would restore one step off in some schedules
(Lightning's public API cannot set its step counter; ``tests/test_determinism_resume.py`` pins
this behaviour).

**Two-phase, and what "good" means.** The state of batch ``k`` is written in full to a pending
file (atomically) and renamed over ``last.ckpt`` (the commit) only once it is known to be good:
every weight finite, and the first loss computed with those weights finite. That loss is the
validation loss (``val/loss``) when a validation follows batch ``k``, else the training loss
(``train/loss``) of batch ``k + 1``; the commit happens at the end of that validation or of that
batch. The last state of a run (the end of training, an interrupt), which no later loss
evaluates, is judged by its weights and the training loss of batch ``k`` (computed at the weights
it updated). Under ``nonfinite.policy=skip`` a diverging run keeps finite weights (its non-finite
steps are skipped), say 1e10, while its losses are NaN: such a state is never kept, a warning
says so, and ``last.ckpt`` stays the last good state. A process killed between the two phases
leaves a pending file, which the next run in that directory removes; ``last.ckpt`` is then at
most ``every_n_steps + 1`` optimizer steps behind the state that was lost.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

from rnnflow.runtime.run_lock import process_alive

log = logging.getLogger(__name__)


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (e.g. a full disk); the previous file is intact.

    The message is one line; ``errno`` is the operating system's error number.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


def all_finite(module: torch.nn.Module) -> bool:
    """Whether every parameter of ``module`` is finite (one device sync)."""
    flags = [torch.isfinite(p.detach()).all() for p in module.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (POSIX: fsync the directory itself)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:  # some filesystems (e.g. certain network mounts) refuse it
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _owner_tag() -> str:
    """``<host>.<pid>``: names this process's temporary files, so a later run can tell stale ones."""
    return f"{socket.gethostname()}.{os.getpid()}"


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` atomically: ``write(file)`` into a temporary file in the same directory, flush,
    fsync, ``os.replace`` over ``path``, fsync the directory.

    On failure the temporary file is removed, ``path`` is left as it was, and an ``OSError`` is
    raised as :class:`CheckpointWriteError` (one line: the path and the reason).
    """
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / f".{path.name}.{_owner_tag()}.tmp"
    try:
        # O_EXCL: never write through a file (or link) someone else created under that name.
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        fsync_dir(directory)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        cause = _os_error(error)
        if cause is None:
            raise
        reason = cause.strerror or str(cause)
        message = f"cannot write {path}: {reason}; the previous {path.name} is left as it was"
        raise CheckpointWriteError(message, cause.errno) from None


def _os_error(error: BaseException) -> OSError | None:
    """The ``OSError`` behind ``error``: ``torch.save`` reports a failed write (a full disk) as a
    ``RuntimeError`` of its zip writer, raised while handling the file object's ``OSError``."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` through :func:`atomic_write` for local paths; Lightning's own IO for remote URLs.

    Lightning's ``TorchCheckpointIO`` writes a local checkpoint in place (``fsspec``'s local
    "transaction" is a plain write): a process killed during the write leaves a truncated file,
    and a full disk replaces a good checkpoint with a partial one. Pass it to the Trainer:
    ``Trainer(plugins=[AtomicCheckpointIO()])``.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path) and not str(path).startswith("file://"):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_write(str(path).removeprefix("file://"), lambda file: torch.save(checkpoint, file))


def _finite_metric(trainer: L.Trainer, name: str) -> str | None:
    value = trainer.callback_metrics.get(name)
    if value is None:
        return None
    value = float(value)
    return None if math.isfinite(value) else f"{name} is {value}"


def problem_with_state(trainer: L.Trainer, pl_module: L.LightningModule) -> str | None:
    """Why the state at the end of this batch is not good, or None: its weights, and the training
    loss of the batch that produced it (the later loss that decides the commit comes on top)."""
    if not all_finite(pl_module):
        return "the weights are not finite"
    return _finite_metric(trainer, "train/loss")


def validation_follows(trainer: L.Trainer) -> bool:
    """Whether Lightning validates right after the current training batch.

    Step-based validation (rnnflow's streams are endless): every ``val_check_batch`` batches, and
    before a requested stop. A schedule this misses (time-based validation) only delays the
    checkpoint of that validation by one batch (:meth:`RunCheckpoint.on_validation_end`).
    """
    if not sum(trainer.num_val_batches or [0]):
        return False
    if trainer.should_stop:
        return True
    interval = trainer.val_check_batch
    if trainer.check_val_every_n_epoch is not None or not isinstance(interval, int):
        return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)
    return trainer.fit_loop.epoch_loop.batch_progress.total.ready % interval == 0


class RunCheckpoint(Checkpoint):
    """Keep ``<dirpath>/<filename>`` the newest good state of the run (see the module docstring).

    Args:
        dirpath: the checkpoint directory (``<run>/checkpoints``).
        every_n_steps: save every this many optimizer steps (``trainer.global_step``); None: only
            at validations, the last step and on request.
        filename: the one checkpoint kept.
    """

    def __init__(
        self, dirpath: str | os.PathLike, every_n_steps: int | None = 100, filename: str = "last.ckpt"
    ):
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps={every_n_steps!r}: expected a positive integer or None")
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.path = self.dirpath / filename
        self.saved_step: int | None = None  # global_step of the state in ``path`` written by this process
        self._requested = False
        self._step_at_batch_start = 0
        self._pending: Path | None = None
        self._pending_step = 0
        self._pending_problem: str | None = None

    @property
    def pending_path(self) -> Path:
        return self.dirpath / f".{self.path.name}.{_owner_tag()}.pending"

    def request_save(self) -> None:
        """Save at the end of the current training batch (the interrupt asks for this)."""
        self._requested = True

    # --- Lightning hooks ---------------------------------------------------------------------------

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.remove_stale_files()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # The state saved at the end of the previous batch: this batch's loss was computed with it.
        self.commit(trainer, _finite_metric(trainer, "train/loss"))
        step = trainer.global_step
        follows = validation_follows(trainer)
        due = (
            self._requested
            or follows
            or (0 < trainer.max_steps <= step)
            or (
                self.every_n_steps is not None
                and step // self.every_n_steps > self._step_at_batch_start // self.every_n_steps
            )
        )
        if due:
            self._write(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        if self._pending is None:
            # A validation the schedule above did not foresee: save at the end of the next batch.
            self._requested = True
            return
        self.commit(trainer, _finite_metric(trainer, "val/loss"))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.commit(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # The pending state is consistent; keep it unless the validation evaluating it was cut short.
        if trainer.validating:
            self.discard(trainer)
        else:
            self.commit(trainer)

    # --- writing ---------------------------------------------------------------------------------

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._requested = False
        self.discard(trainer)
        problem = problem_with_state(trainer, pl_module)
        # All ranks take part in trainer.save_checkpoint (a collective); rank 0 writes the file.
        try:
            trainer.save_checkpoint(self.pending_path, weights_only=False)
        except CheckpointWriteError as error:
            reason = os.strerror(error.errno) if error.errno else str(error)
            message = (
                f"cannot save the checkpoint of step {trainer.global_step} in {self.dirpath}: {reason}; "
                f"the last good state is {self._kept()}, intact"
            )
            raise CheckpointWriteError(message, error.errno) from None
        self._pending = self.pending_path
        self._pending_step = trainer.global_step
        self._pending_problem = problem

    def commit(self, trainer: L.Trainer, problem: str | None = None) -> None:
        """Make the pending checkpoint ``last.ckpt`` if its state is good, else drop it (idempotent).

        ``problem``: what a later evaluation of the pending state found wrong (None: nothing).
        """
        if self._pending is None:
            return
        problem = self._pending_problem or problem
        if problem is not None:
            log.warning(
                "not keeping the state of step %d: %s; the last good state is %s",
                self._pending_step,
                problem,
                self._kept(),
            )
            self.discard(trainer)
            return
        pending, self._pending = self._pending, None
        if trainer.is_global_zero:
            with open(pending, "rb") as file:  # durable even if another CheckpointIO wrote it
                os.fsync(file.fileno())
            os.replace(pending, self.path)
            fsync_dir(self.dirpath)
        self.saved_step = self._pending_step

    def _kept(self) -> str:
        if not self.path.is_file():
            return "none (no checkpoint yet)"
        return f"{self.path} (step {self.saved_step})" if self.saved_step is not None else str(self.path)

    def discard(self, trainer: L.Trainer) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and trainer.is_global_zero:
            with contextlib.suppress(FileNotFoundError):
                pending.unlink()

    def remove_stale_files(self) -> None:
        """Remove temporary and pending files that killed processes left in ``dirpath``.

        Files of a live process on this host are kept (its name holds ``<host>.<pid>``).
        """
        if not self.dirpath.is_dir():
            return
        own = re.compile(re.escape(f".{socket.gethostname()}.") + r"(\d+)\.")
        for path in self.dirpath.glob(f"*.{self.path.name}.*"):
            pids = {int(pid) for pid in own.findall(path.name)} - {os.getpid()}
            if not any(process_alive(pid) for pid in pids):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
