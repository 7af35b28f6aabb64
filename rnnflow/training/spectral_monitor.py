"""Callback: spectral radius and norm of every recurrent gate block, to TensorBoard.

At step 0, every ``every_n_steps`` and at the last step, writes
``spectral/L/radius`` and ``spectral/L/norm`` (rnn) or ``spectral/L/<gate>/radius`` and
``.../norm`` (lstm ``i f g o``, gru ``r z n``); see :mod:`rnnflow.diagnostics.spectral`.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from rnnflow.diagnostics.spectral import network_spectra
from rnnflow.training.tensorboard import tensorboard_writer


class SpectralMonitor(L.Callback):
    def __init__(self, every_n_steps: int | None = 100) -> None:
        self.every_n_steps = every_n_steps

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # Before the optimizer step: the weights the batch's gradient flowed through.
        step = trainer.global_step
        if self.every_n_steps is None or not (
            step % self.every_n_steps == 0 or step == trainer.max_steps - 1
        ):
            return
        writer = tensorboard_writer(trainer)
        if writer is None:
            return
        for tag, value in network_spectra(pl_module.model.layers, pl_module.model.cell).items():
            writer.add_scalar(tag, value, step)
