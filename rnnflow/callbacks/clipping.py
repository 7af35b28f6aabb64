"""Callback: every step's gradient norm and clipping event, without a host sync per step.

Per optimizer step s the module leaves on the device ``‖g‖`` before and after clipping
and ``clipped_s ∈ {0, 1}`` (``RecurrentTaskModule.clip_records``). They are buffered on
the device and written to TensorBoard in one transfer every ``flush_every_n_steps`` (and
at the end), one point per step:

* ``clip/pre_norm``, ``clip/post_norm``: ``‖g‖₂`` over all parameters before/after clipping;
* ``clip/clipped``: 1 if clipping changed the gradient at that step;
* ``clip/events``: running count ``Σ_{s' ≤ s} clipped_{s'}``;
* ``clip/fraction``: ``events / (steps so far)``.

Under truncated BPTT a batch takes one optimizer step per chunk; its point then holds the
largest pre/post norm over its chunks, ``clipped`` = 1 if any chunk was clipped, and
``events``/``fraction`` count every optimizer step.

Counters are part of the checkpoint, so a resumed run continues them.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from rnnflow.callbacks.logging import batch_step, tensorboard_writer


class ClipMonitor(L.Callback):
    def __init__(self, flush_every_n_steps: int = 50) -> None:
        self.flush_every_n_steps = flush_every_n_steps
        self.events = 0
        self.steps = 0
        self._buffer: list[torch.Tensor] = []
        self._buffer_steps: list[int] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if pl_module.clip_records:
            records = torch.stack(pl_module.clip_records)  # (optimizer steps in this batch, 3)
            pl_module.clip_records.clear()
            largest = records.amax(dim=0)
            counts = torch.stack(
                [records[:, 2].sum(), torch.tensor(float(len(records)), device=records.device)]
            )
            self._buffer.append(torch.cat([largest, counts]))  # pre, post, clipped, events, steps
            self._buffer_steps.append(batch_step(trainer))
        if len(self._buffer) >= self.flush_every_n_steps or trainer.should_stop:
            self.flush(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush(trainer)

    def flush(self, trainer: L.Trainer) -> None:
        """Move the buffered steps to the host (one transfer) and write them."""
        if not self._buffer:
            return
        rows = torch.stack(self._buffer).float().cpu().tolist()  # the one host sync
        writer = tensorboard_writer(trainer)
        for step, (pre, post, clipped, events, steps) in zip(self._buffer_steps, rows, strict=True):
            self.steps += int(steps)
            self.events += int(events)
            if writer is not None:
                writer.add_scalar("clip/pre_norm", pre, step)
                writer.add_scalar("clip/post_norm", post, step)
                writer.add_scalar("clip/clipped", clipped, step)
                writer.add_scalar("clip/events", self.events, step)
                writer.add_scalar("clip/fraction", self.events / self.steps, step)
        self._buffer.clear()
        self._buffer_steps.clear()

    def state_dict(self) -> dict[str, Any]:
        # Checkpoints are written between steps: count what is still buffered first.
        if getattr(self, "_trainer", None) is not None:
            self.flush(self._trainer)
        return {"events": self.events, "steps": self.steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.events, self.steps = int(state_dict["events"]), int(state_dict["steps"])
