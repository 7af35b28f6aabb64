"""Ctrl-C and SIGTERM: save the run where it stands, so that it can be resumed.

Lightning turns SIGTERM (e.g. SLURM's pre-emption) into an exception at the end of the
current batch and Ctrl-C into ``KeyboardInterrupt``; both reach ``on_exception``. There the
state is written to ``checkpoints/last.ckpt`` (if the weights are finite) and the resume
command is printed. Lightning then flushes the loggers. Other exceptions (a bug, a
``nonfinite.policy=raise``) leave the last checkpoint as it was.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from rnnflow.training.checkpoint import all_finite

log = logging.getLogger(__name__)


class InterruptCheckpoint(L.Callback):
    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        if not all_finite(pl_module):
            log.warning("interrupted with non-finite weights: %s is left as it was", self.path)
            return
        trainer.save_checkpoint(self.path)
        # On stderr as well as the log: the one line a user needs after Ctrl-C or a pre-emption.
        print(
            f"rnnflow: interrupted at step {trainer.global_step}; resume with ckpt_path={self.path}",
            file=sys.stderr,
        )
