"""How rnnflow's callbacks write: scalars through every logger, TensorBoard-only records through its writer.

Scalars go to ``trainer.loggers`` (``logger.log_metrics(metrics, step)``), so that TensorBoard, CSV,
W&B or MLflow all get them. Only what TensorBoard alone has (images, custom-scalar layouts, tensor
summaries, HParams) goes through the ``SummaryWriter`` of a :class:`TensorBoardLogger`.
Everything is written on global rank 0 only.
"""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter


def log_scalars(trainer: L.Trainer, metrics: Mapping[str, float], step: int) -> None:
    """Write ``metrics`` at ``step`` to every logger of the trainer (global rank 0 only)."""
    if trainer.global_rank != 0 or not metrics:
        return
    for logger in trainer.loggers:
        logger.log_metrics(dict(metrics), step)


def tensorboard_experiment(trainer: L.Trainer) -> SummaryWriter | None:
    """The run's ``SummaryWriter`` on global rank 0, else None (no TensorBoard logger, other ranks)."""
    if trainer.global_rank != 0:
        return None
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def batch_step(trainer: L.Trainer) -> int:
    """Index of the current training batch: the x-axis of every rnnflow tag.

    The number of training batches completed before this one (Lightning's batch progress, restored
    exactly on resume; it is incremented after ``on_train_batch_end``). It is the step Lightning
    logs ``train/loss`` at, and ``trainer.global_step`` at the start of a batch, except under
    truncated BPTT, where a batch takes one optimizer step per chunk and ``global_step`` (what
    ``trainer.max_steps`` counts) runs ahead.
    """
    return trainer.fit_loop.epoch_loop.batch_progress.total.completed
