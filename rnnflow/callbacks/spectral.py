"""Callback: spectral radius and norm of every recurrent gate block, to TensorBoard.

At step 0, every ``every_n_steps`` and at the last batch (:class:`StepSchedule`), writes
``spectral/L/radius`` and ``spectral/L/norm`` (rnn) or ``spectral/L/<gate>/radius`` and
``.../norm`` (lstm ``i f g o``, gru ``r z n``); see :mod:`rnnflow.probes.spectral`.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from rnnflow.callbacks.logging import batch_step, tensorboard_writer
from rnnflow.callbacks.schedule import StepSchedule
from rnnflow.probes.spectral import network_spectra


class SpectralMonitor(L.Callback):
    def __init__(self, every_n_steps: int | None = 100) -> None:
        self.schedule = StepSchedule(every_n_steps)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # Before the optimizer step: the weights the batch's gradient flowed through.
        if not self.schedule.due(trainer, pl_module):
            return
        step = batch_step(trainer)
        writer = tensorboard_writer(trainer)
        if writer is None:
            return
        for tag, value in network_spectra(pl_module.model.layers, pl_module.model.cell).items():
            writer.add_scalar(tag, value, step)

    def state_dict(self) -> dict[str, int]:
        return self.schedule.state_dict()

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.schedule.load_state_dict(state_dict)
