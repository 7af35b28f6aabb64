"""Callback: what a non-finite loss or gradient does to a run (``nonfinite.policy``).

Just before each optimizer step (``on_before_optimizer_step``; the gradients are complete, and
unscaled under mixed precision) the total gradient norm ``‖g‖₂`` is taken. A non-finite loss gives
a non-finite gradient, so this one check covers both. If ``‖g‖₂`` is not finite:

* ``skip``: the gradients are dropped (``p.grad = None``: the optimizer leaves those parameters and
  their state untouched) and the step is counted in ``nonfinite/events``; after ``max_consecutive``
  skipped steps in a row the run stops with a message;
* ``stop``: the run stops at the first one;
* ``raise``: ``FloatingPointError`` (non-zero exit).

Deciding needs the norm on the host: one scalar sync per step, the price ``torch.amp.GradScaler``
pays for its own skips. The counters are part of the checkpoint.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
from torch import nn

NONFINITE_POLICIES = ("skip", "stop", "raise")
log = logging.getLogger(__name__)


class NonFiniteGuard(L.Callback):
    def __init__(self, policy: str = "skip", max_consecutive: int = 10) -> None:
        if policy not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite.policy={policy!r}: expected one of {', '.join(NONFINITE_POLICIES)}")
        self.policy = policy
        self.max_consecutive = max_consecutive
        self.events = 0
        self.consecutive = 0

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        params = [p for p in pl_module.parameters() if p.grad is not None]
        norm = float(nn.utils.get_total_norm([p.grad for p in params])) if params else 0.0  # one host sync
        if math.isfinite(norm):
            self.consecutive = 0
            return
        for param in params:
            param.grad = None
        self.events += 1
        self.consecutive += 1
        message = (
            f"non-finite loss or gradient at step {trainer.global_step} "
            f"({self.consecutive} in a row, {self.events} in all)"
        )
        if self.policy == "raise":
            raise FloatingPointError(message + "; nonfinite.policy=raise")
        if self.policy == "stop" or self.consecutive >= self.max_consecutive:
            log.error(
                "%s: stopping (nonfinite.policy=%s, max_consecutive=%d); checkpoints/last.ckpt keeps the "
                "last good state",
                message,
                self.policy,
                self.max_consecutive,
            )
            trainer.should_stop = True
        else:
            log.warning("%s: step skipped (nonfinite.policy=skip)", message)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        pl_module.log("nonfinite/events", float(self.events))

    def state_dict(self) -> dict[str, int]:
        return {"events": self.events, "consecutive": self.consecutive}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.events = int(state_dict.get("events", 0))
        self.consecutive = int(state_dict.get("consecutive", 0))
