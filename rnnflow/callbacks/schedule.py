"""When diagnostics run: at batch 0, every N batches after, and at the last batch.

Steps are batch indices (:func:`rnnflow.callbacks.logging.batch_step`); the last batch
is the one after which ``trainer.global_step`` (optimizer steps; several per batch under
truncated BPTT) reaches ``trainer.max_steps``.
"""

from __future__ import annotations

import lightning as L

from rnnflow.callbacks.logging import batch_step


class StepSchedule:
    def __init__(self, every_n_steps: int | None) -> None:
        self.every_n_steps = every_n_steps
        self.next_step = 0

    def due(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        """Whether the batch about to run is a diagnostic step (call once per batch, at its start)."""
        if self.every_n_steps is None:
            return False
        step = batch_step(trainer)
        is_last = 0 < trainer.max_steps <= trainer.global_step + getattr(pl_module, "steps_per_batch", 1)
        if step >= self.next_step or is_last:
            self.next_step = (step // self.every_n_steps + 1) * self.every_n_steps
            return True
        return False

    def state_dict(self) -> dict[str, int]:
        return {"next_step": self.next_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.next_step = int(state.get("next_step", 0))
