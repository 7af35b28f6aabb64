"""rnnflow's TensorBoard logger: Lightning's, without the ``epoch`` scalar.

Lightning adds the current epoch to every batch of logged metrics. rnnflow's training stream is
endless (one epoch, steps counted), so ``epoch`` would be a flat 0 card near the top of
TensorBoard's Time Series tab, ahead of the loss and the gradient flow.
"""

from __future__ import annotations

from collections.abc import Mapping

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger


class TensorBoardLogger(LightningTensorBoardLogger):
    """``lightning.pytorch.loggers.TensorBoardLogger`` that does not write the ``epoch`` scalar."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)
