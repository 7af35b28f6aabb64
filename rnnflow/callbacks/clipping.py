"""Callback: gradient clipping and every step's clipping statistics, without a host sync per step.

Per optimizer step s, just before the optimizer (Lightning's ``on_before_optimizer_step``: the
gradients are complete and unscaled under mixed precision), with ``g`` all parameter gradients:

    pre_s  = ‖g‖₂ = (Σ_p ‖g_p‖²)^½                                    (always)
    norm clipping (algorithm = norm, threshold c):   g ← g · min(1, c / ‖g‖),  clipped_s = [pre_s > c]
    value clipping (algorithm = value):              g ← clamp(g, −c, c),      clipped_s = [max|g| > c]
    post_s = ‖g‖₂ after clipping

The threshold is ``max_norm`` (this callback clips), or else Lightning's own
``Trainer(gradient_clip_val=…, gradient_clip_algorithm=…)``, which Lightning applies right after this
hook; the callback then only measures (post and clipped computed as Lightning's clipping will make
them). Both at once would clip twice and are refused. Lightning's ``clip_gradients`` discards the
pre-clip norm, hence this callback.

The statistics stay on the device, are buffered and written in one transfer every
``flush_every_n_steps`` (and at the end), one point per batch:

* ``clip/pre_norm``, ``clip/post_norm``: ``‖g‖₂`` before/after clipping (the largest over the
  batch's optimizer steps under truncated BPTT);
* ``clip/clipped``: 1 if clipping changed the gradient at that batch;
* ``clip/events``: running count ``Σ_{s' ≤ s} clipped_{s'}`` over optimizer steps;
* ``clip/fraction``: ``events / (optimizer steps so far)``.

Without any clipping only ``clip/pre_norm`` (the gradient norm) is written. The counters are part of
the checkpoint, so a resumed run continues them.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from rnnflow.callbacks.logging import batch_step, log_scalars

CLIP_ALGORITHMS = ("norm", "value")


class ClipMonitor(L.Callback):
    """Clip at ``max_norm`` (None: Lightning's ``gradient_clip_val`` or none) and record every step."""

    def __init__(
        self, max_norm: float | None = None, algorithm: str = "norm", flush_every_n_steps: int = 50
    ) -> None:
        if algorithm not in CLIP_ALGORITHMS:
            raise ValueError(f"clip.algorithm={algorithm!r}: expected one of {', '.join(CLIP_ALGORITHMS)}")
        self.max_norm = max_norm
        self.algorithm = algorithm
        self.flush_every_n_steps = flush_every_n_steps
        self.events = 0
        self.steps = 0
        self._step_records: list[torch.Tensor] = []  # this batch: tensor([pre, post, clipped]) per step
        self._buffer: list[torch.Tensor] = []
        self._buffer_steps: list[int] = []
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer
        if self.max_norm is not None and trainer.gradient_clip_val:
            raise ValueError(
                "clip.max_norm and trainer.gradient_clip_val are both set: set only clip.max_norm "
                "(with clip.algorithm)"
            )

    def _threshold(self, trainer: L.Trainer) -> tuple[float | None, str]:
        if self.max_norm is not None:
            return self.max_norm, self.algorithm
        if trainer.gradient_clip_val:
            return float(trainer.gradient_clip_val), str(trainer.gradient_clip_algorithm or "norm")
        return None, "norm"

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        params = [p for p in pl_module.parameters() if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        threshold, algorithm = self._threshold(trainer)
        clips_here = self.max_norm is not None
        if threshold is None:
            pre = post = nn.utils.get_total_norm(grads)
            clipped = torch.zeros_like(pre)
        elif algorithm == "norm":
            if clips_here:
                pre = nn.utils.clip_grad_norm_(params, threshold)
            else:
                pre = nn.utils.get_total_norm(grads)
            clipped = (pre > threshold).to(pre.dtype)
            post = pre.clamp(max=threshold)
        else:
            pre = nn.utils.get_total_norm(grads)
            largest = torch.stack([g.detach().abs().amax() for g in grads]).amax()
            clipped = (largest > threshold).to(pre.dtype)
            if clips_here:
                nn.utils.clip_grad_value_(params, threshold)
                post = nn.utils.get_total_norm(grads)
            else:
                post = nn.utils.get_total_norm([g.clamp(-threshold, threshold) for g in grads])
        self._step_records.append(torch.stack([pre, post, clipped]).detach())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._step_records:
            records = torch.stack(self._step_records)  # (optimizer steps in this batch, 3)
            self._step_records.clear()
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
        clipping = self._threshold(trainer)[0] is not None
        for step, (pre, post, clipped, events, steps) in zip(self._buffer_steps, rows, strict=True):
            self.steps += int(steps)
            self.events += int(events)
            metrics = {"clip/pre_norm": pre}
            if clipping:
                metrics.update(
                    {
                        "clip/post_norm": post,
                        "clip/clipped": clipped,
                        "clip/events": self.events,
                        "clip/fraction": self.events / self.steps,
                    }
                )
            log_scalars(trainer, metrics, step)
        self._buffer.clear()
        self._buffer_steps.clear()

    def state_dict(self) -> dict[str, Any]:
        # Checkpoints are written between steps: count what is still buffered first.
        if self._trainer is not None:
            self.flush(self._trainer)
        return {"events": self.events, "steps": self.steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.events, self.steps = int(state_dict["events"]), int(state_dict["steps"])
