"""Ctrl-C and SIGTERM: stop at a batch boundary, save the run, exit; the checkpoint resumes exactly.

During training, SIGTERM (``kill``, SLURM's pre-emption) and the first Ctrl-C only set a flag.
At the start of the next batch, before anything of that batch has run, every rank agrees on
the flag (an all-reduce ``max`` over ranks, one integer per batch in DDP) and, if any rank
was signalled, all of them write ``checkpoints/last.ckpt`` there (a collective, reached by all
ranks together; skipped if the weights are not finite), print the resume command, flush the
loggers and raise :class:`Interrupted`, a ``SystemExit`` with status ``128 + signal`` (143 for
SIGTERM, 130 for Ctrl-C). Nothing of that batch has run: a resume starts with it. A second
Ctrl-C interrupts at once and saves nothing.

Lightning's own SIGTERM handling broadcasts from inside the signal handler; when all ranks are
signalled (SLURM, Ctrl-C in a terminal) those broadcasts can interleave with the training's
collectives and hang the run, so this callback replaces it while the training loop runs.
Place it first among the callbacks: the batch must be stopped before a diagnostic schedules
itself for it. Other exceptions (a bug, ``nonfinite.policy=raise``) leave the last checkpoint
as it was.

In a SLURM batch job the signals that announce pre-emption or the time limit (submitit's USR2,
``--signal=USR1@N``) stop the run the same way, and after the save the job is handed back to
SLURM to be requeued (:mod:`rnnflow.runtime.slurm`); the requeued job resumes from this checkpoint.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.utilities.exceptions import SIGTERMException

from rnnflow.runtime.checkpoint import all_finite
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


class InterruptCheckpoint(L.Callback):
    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self.requested = 0  # the signal received (0: none)
        self._previous: dict[int, Any] = {}
        self._slurm: SlurmJob | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning installed its handlers (in ``fit``, after ``on_fit_start``).
        self.requested = 0
        self._slurm = SlurmJob.current()
        signals = SIGNALS + (self._slurm.warning_signals() if self._slurm else ())
        if threading.current_thread() is threading.main_thread():
            for signum in signals:
                self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            if self.requested:
                raise KeyboardInterrupt
            print("\nrnnflow: stopping before the next batch (Ctrl-C again to abort)", file=sys.stderr)
        self.requested = self.requested or signum

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        requested = self.requested
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            flag = torch.tensor([requested], dtype=torch.int32, device=pl_module.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            requested = int(flag.item())
        if not requested:
            return
        # Save here rather than in on_exception: spawned DDP workers (ddp_spawn) never reach
        # on_exception. Nothing of this batch has run; a resume runs it first.
        self._save(trainer, pl_module)
        for logger in trainer.loggers:
            logger.finalize("interrupted")  # flush TensorBoard before the process exits
        trainer.strategy.barrier("rnnflow.interrupt")
        if self._slurm is not None and requested != signal.SIGINT:
            self._slurm.requeue(requested, self._previous.get(requested))
        raise Interrupted(requested)  # the handlers are restored in on_exception (not reached under spawn)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()
        # Lightning's own SIGTERM stop (a signal outside the training loop) in a single process, at a
        # batch end. Interrupted was saved already; anything else (a bug, a non-finite explosion, a
        # second Ctrl-C mid-batch) leaves last.ckpt as it was.
        if type(exception) is SIGTERMException and trainer.world_size == 1:
            self._save(trainer, pl_module)

    def _save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not all_finite(pl_module):
            log.warning("interrupted with non-finite weights: %s is left as it was", self.path)
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # full state: optimizer, loops, callbacks
        if trainer.is_global_zero:
            # On stderr as well as the log: the one line a user needs after Ctrl-C or a pre-emption.
            print(
                f"rnnflow: interrupted at step {trainer.global_step}; resume with ckpt_path={self.path}",
                file=sys.stderr,
            )
