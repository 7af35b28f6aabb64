"""Ctrl-C and SIGTERM: stop at a batch boundary, save the run, exit; the checkpoint resumes exactly.

During training, SIGTERM (``kill``, SLURM's pre-emption) and the first Ctrl-C only set a flag.
At the end of every training batch every rank agrees on the flag (an all-reduce ``max`` over
ranks, one integer per batch in DDP). If any rank was signalled, all of them ask the run's
:class:`~rnnflow.runtime.checkpoint.RunCheckpoint` to save at the end of that batch (the point at
which Lightning's loops restore exactly; a validation due after it still runs). At the start of
the next batch, before anything of it has run, the checkpoint is committed as
``checkpoints/last.ckpt`` (if the state is good), the resume command is printed, the loggers are
flushed and :class:`Interrupted` is raised, a ``SystemExit`` with status ``128 + signal`` (143 for
SIGTERM, 130 for Ctrl-C). A resume starts with that next batch. A signal that arrives after the
last check of a batch (during its logging or a validation) stops the run one batch later. A second
Ctrl-C interrupts at once; ``last.ckpt`` then holds the last periodic checkpoint.

Lightning's own SIGTERM handling broadcasts from inside the signal handler; when all ranks are
signalled (SLURM, Ctrl-C in a terminal) those broadcasts can interleave with the training's
collectives and hang the run, so this callback replaces it while the training loop runs (a
SIGTERM Lightning received before that is taken over). Other exceptions (a bug,
``nonfinite.policy=raise``) leave ``last.ckpt`` as the checkpoint callback left it.

In a SLURM batch job the signals that announce pre-emption or the time limit (submitit's USR2,
``--signal=USR1@N``) stop the run the same way, and after the save the job is handed back to
SLURM to be requeued (:mod:`rnnflow.runtime.slurm`); the requeued job resumes from this checkpoint.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from rnnflow.config.command_line import shell_override
from rnnflow.runtime.checkpoint import RunCheckpoint
from rnnflow.runtime.slurm import SlurmJob

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(SIGTERMException):
    """The run was stopped by ``signum`` (SIGTERM or SIGINT) at a batch boundary; exit status 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def interrupt_exit_status(error: BaseException) -> int | None:
    """The exit status of a run stopped by a signal after saving (128 + signal), else None.

    :class:`Interrupted` (or Lightning's ``SIGTERMException``) in this process, or under
    ``ddp_spawn`` the ``ProcessExitedException`` of a worker that exited that way.
    """
    from torch.multiprocessing.spawn import ProcessExitedException

    if isinstance(error, SIGTERMException):
        return 128 + getattr(error, "signum", signal.SIGTERM)
    if isinstance(error, ProcessExitedException) and error.exit_code in {128 + s for s in SIGNALS}:
        return error.exit_code
    return None


class InterruptCheckpoint(Checkpoint):
    """Stop on SIGTERM / Ctrl-C at a batch boundary with a checkpoint (see the module docstring).

    The checkpoint is the run's :class:`RunCheckpoint` (without one the run stops unsaved). A
    Lightning ``Checkpoint`` callback, so Lightning runs its hooks after every other callback's
    (and before the ``RunCheckpoint`` listed after it): a signal that arrives while any other
    callback does its end-of-batch work still stops the run at the end of this batch.
    """

    def __init__(self) -> None:
        self.requested = 0  # the signal received (0: none)
        self._stopping = 0  # the signal all ranks agreed on at the end of the last batch
        self._previous: dict[int, Any] = {}
        self._slurm: SlurmJob | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning installed its handlers (in ``fit``, after ``on_fit_start``).
        self.requested = signal.SIGTERM if trainer.received_sigterm else 0
        self._stopping = 0
        self._slurm = SlurmJob.current()
        signals = SIGNALS + (self._slurm.warning_signals() if self._slurm else ())
        if threading.current_thread() is threading.main_thread():
            for signum in signals:
                self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            if self.requested:
                raise KeyboardInterrupt
            print("\nrnnflow: stopping after this batch (Ctrl-C again to abort)", file=sys.stderr)
        self.requested = self.requested or signum

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        requested = self.requested
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            flag = torch.tensor([requested], dtype=torch.int32, device=pl_module.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            requested = int(flag.item())
        if requested:
            self._stopping = requested
            for checkpoint in _run_checkpoints(trainer):
                checkpoint.request_save()  # it runs after this callback: at the end of this batch

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not self._stopping:
            return
        # Before anything of this batch has run but the other callbacks' scheduling (and here rather
        # than in on_exception: spawned DDP workers under ddp_spawn never reach on_exception).
        self._report(trainer)
        for logger in trainer.loggers:
            logger.finalize("interrupted")  # flush TensorBoard before the process exits
        trainer.strategy.barrier("rnnflow.interrupt")
        if self._slurm is not None and self._stopping != signal.SIGINT:
            self._slurm.requeue(self._stopping, self._previous.get(self._stopping))
        # The handlers are restored in on_exception (not reached under spawn).
        raise Interrupted(self._stopping)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()
        # Lightning's own SIGTERM stop (a SIGTERM it received before on_train_start): the save was
        # requested at the end of the batch it stopped after.
        if type(exception) is SIGTERMException and self._stopping:
            self._report(trainer)

    def _report(self, trainer: L.Trainer) -> None:
        checkpoints = _run_checkpoints(trainer)
        for checkpoint in checkpoints:
            checkpoint.commit(trainer)
        if not trainer.is_global_zero:
            return
        saved = [c for c in checkpoints if c.saved_step == trainer.global_step]
        # On stderr as well as the log: the one line a user needs after Ctrl-C or a pre-emption.
        if saved:
            print(
                f"rnnflow: interrupted at step {trainer.global_step}; resume with "
                f"{shell_override('ckpt_path', str(saved[0].path))}",
                file=sys.stderr,
            )
        elif checkpoints and checkpoints[0].path.is_file():
            print(
                f"rnnflow: interrupted at step {trainer.global_step}, a state that is not good (see the "
                f"warning above); resume from the last good state with "
                f"{shell_override('ckpt_path', str(checkpoints[0].path))}",
                file=sys.stderr,
            )
        else:
            print(
                f"rnnflow: interrupted at step {trainer.global_step}; no checkpoint to resume from",
                file=sys.stderr,
            )


def _run_checkpoints(trainer: L.Trainer) -> list[RunCheckpoint]:
    return [c for c in trainer.checkpoint_callbacks if isinstance(c, RunCheckpoint)]
