"""Callbacks that make every run, however short, end with validation and an HParams entry."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from rnnflow.callbacks.schedule import is_last_batch


class ValidateAtEnd(L.Callback):
    """Validate (and so checkpoint) after the last training step.

    Lightning validates every ``val_check_interval`` batches but not at ``max_steps``
    unless it is a multiple of it. Requesting a stop at the last step makes Lightning's
    own loop run validation there (``Trainer.should_stop`` triggers a final check).
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if is_last_batch(trainer, pl_module, started=False):
            trainer.should_stop = True


class HParamsSummary(L.Callback):
    """Write the run's hyperparameters with its final validation metrics to the HParams tab.

    The metrics are logged under ``hparams/<metric>`` (e.g. ``hparams/val_loss``) so that
    the ``val/*`` curves keep only their real points.
    """

    def __init__(
        self, hparams: Mapping[str, Any], metrics: tuple[str, ...] = ("val/loss", "val/accuracy")
    ) -> None:
        self.hparams = dict(hparams)
        self.metrics = metrics

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        final = {}
        for name in (*self.metrics, "val/baseline_loss"):
            if name in trainer.callback_metrics:
                final["hparams/" + name.replace("/", "_")] = float(trainer.callback_metrics[name])
        final = {k: v for k, v in final.items() if not math.isnan(v)}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(self.hparams, metrics=final)
