"""When instruments run: at batch 0, every N batches after, and at the last batch.

Steps are batch indices (:func:`rnnflow.callbacks.logging.batch_step`). ``trainer.max_steps`` counts
optimizer steps; a LightningModule that takes several optimizer steps per batch (truncated BPTT)
says how many with an ``optimizer_steps_per_batch`` attribute (default 1). The last batch is the one
after which ``trainer.global_step`` reaches ``trainer.max_steps``; :func:`is_last_batch` is the one
place that says so.
"""

from __future__ import annotations

import lightning as L

from rnnflow.callbacks.logging import batch_step


def optimizer_steps_per_batch(pl_module: L.LightningModule) -> int:
    """Optimizer steps one batch takes: the module's ``optimizer_steps_per_batch`` (default 1)."""
    return int(getattr(pl_module, "optimizer_steps_per_batch", 1))


def is_last_batch(trainer: L.Trainer, pl_module: L.LightningModule, started: bool = True) -> bool:
    """Whether the current batch is the last one (``started``: asked at its start, else at its end)."""
    if trainer.max_steps <= 0:
        return False
    ahead = optimizer_steps_per_batch(pl_module) if started else 0
    return trainer.global_step + ahead >= trainer.max_steps


class StepSchedule:
    """Due at batch 0, at every multiple of ``every_n_steps``, and at the last batch (None: never)."""

    def __init__(self, every_n_steps: int | None) -> None:
        self.every_n_steps = every_n_steps
        self.next_step = 0

    def due(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        """Whether the batch about to run is due (call once per batch, at its start)."""
        if self.every_n_steps is None:
            return False
        step = batch_step(trainer)
        if step >= self.next_step or is_last_batch(trainer, pl_module):
            self.next_step = (step // self.every_n_steps + 1) * self.every_n_steps
            return True
        return False

    def state_dict(self) -> dict[str, int]:
        return {"next_step": self.next_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.next_step = int(state.get("next_step", 0))
