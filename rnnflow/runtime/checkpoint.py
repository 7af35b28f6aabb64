"""ModelCheckpoint that never writes non-finite weights.

A run that explodes must not overwrite the last good checkpoint: before every save the
parameters are checked (``torch.isfinite`` over all of them, one sync per save); a
non-finite state is not written and a warning says so.
"""

from __future__ import annotations

import logging

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


def all_finite(module: torch.nn.Module) -> bool:
    flags = [torch.isfinite(p.detach()).all() for p in module.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


class FiniteModelCheckpoint(ModelCheckpoint):
    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        # Lightning's single write path for both top-k and last checkpoints.
        if not all_finite(trainer.lightning_module):
            log.warning(
                "not saving %s: the weights are not finite (the previous checkpoint is kept)", filepath
            )
            return
        super()._save_checkpoint(trainer, filepath)
