"""The TensorBoard writer of a run (rank 0 only) and the x-axis step rnnflow writes at."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter


def tensorboard_writer(trainer: L.Trainer) -> SummaryWriter | None:
    """The run's ``SummaryWriter`` on global rank 0, else None (no TensorBoard logger, other ranks)."""
    if trainer.global_rank != 0:
        return None
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def batch_step(trainer: L.Trainer) -> int:
    """Index of the current training batch: the x-axis of every rnnflow tag.

    It is the step Lightning logs ``train/loss`` at. It equals ``trainer.global_step`` at
    the start of a batch, except under truncated BPTT, where a batch takes one optimizer
    step per chunk and ``global_step`` (what ``trainer.max_steps`` counts) runs ahead.
    """
    return trainer.fit_loop.epoch_loop._batches_that_stepped
