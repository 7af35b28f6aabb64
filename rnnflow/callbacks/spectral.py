"""Callback: spectral radius and norm of every recurrent gate block, on any model.

At step 0, every ``every_n_steps`` and at the last batch (:class:`StepSchedule`), writes, for every
recurrent layer ``L`` of the model (found as the gradient-flow probe finds them, same names),
``spectral/L/radius`` and ``spectral/L/norm`` (rnn) or ``spectral/L/<gate>/radius`` and
``.../norm`` (lstm ``i f g o``, gru ``r z n``); see :mod:`rnnflow.probes.spectral`.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import nn

from rnnflow.callbacks.logging import batch_step, log_scalars
from rnnflow.callbacks.schedule import StepSchedule
from rnnflow.probes.recurrent_modules import LayerKey, find_recurrent_modules, named_layers
from rnnflow.probes.spectral import network_spectra


class SpectralMonitor(L.Callback):
    """Spectra of the recurrent weights every ``every_n_steps`` batches (None: off).

    ``modules``: ``{name: module}`` to watch instead of every recurrent module of the LightningModule.
    """

    def __init__(self, every_n_steps: int | None = 100, modules: dict[str, nn.Module] | None = None) -> None:
        self.schedule = StepSchedule(every_n_steps)
        self.modules = modules
        self._layers: dict[str, tuple[nn.Module, LayerKey]] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._layers = named_layers(self.modules or find_recurrent_modules(pl_module))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # Before the optimizer step: the weights the batch's gradient flowed through.
        if self.schedule.due(trainer, pl_module) and trainer.global_rank == 0:
            log_scalars(trainer, network_spectra(self._layers), batch_step(trainer))

    def state_dict(self) -> dict[str, int]:
        return self.schedule.state_dict()

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.schedule.load_state_dict(state_dict)
