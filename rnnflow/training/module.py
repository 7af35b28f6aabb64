"""The LightningModule: forward, task loss, clipping with its statistics, optimizer.

Per training step on a batch ``(x, y)``:

    ŷ = RecurrentNet(x);  L = task.loss(ŷ, y);  g = ∂L/∂θ
    ‖g‖ = (Σ_p ‖g_p‖²)^½                        (pre-clip norm, always recorded)
    norm clipping:  g ← g · min(1, c / ‖g‖)      (clip.algorithm = norm, c = clip.max_norm)
    value clipping: g ← clamp(g, -c, c)          (clip.algorithm = value)

The pre-clip norm and the clipped flag stay on the device as tensors (no host sync);
callbacks read them when they log. Diagnostics and logging of diagnostics live in
callbacks, so this module stays small.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from rnnflow.models import RecurrentNet
from rnnflow.tasks import SyntheticTask, TaskBatch

OptimizerFactory = Callable[..., torch.optim.Optimizer]


class RecurrentTaskModule(L.LightningModule):
    """Trains a :class:`RecurrentNet` on a :class:`SyntheticTask`."""

    def __init__(
        self,
        model: RecurrentNet,
        task: SyntheticTask,
        optimizer: OptimizerFactory,
        clip_max_norm: float | None = None,
        clip_algorithm: str = "norm",
        hparams: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.optimizer_factory = optimizer
        self.clip_max_norm = clip_max_norm
        self.clip_algorithm = clip_algorithm
        # Plain python values only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(hparams or {}, logger=False)
        self.pre_clip_norm: torch.Tensor | None = None
        self.post_clip_norm: torch.Tensor | None = None
        self.clipped: torch.Tensor | None = None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs)

    def training_step(self, batch: TaskBatch, batch_idx: int) -> torch.Tensor:
        loss = self.task.loss(self.model(batch.inputs), batch.targets)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: TaskBatch, batch_idx: int) -> None:
        outputs = self.model(batch.inputs)
        self.log("val/loss", self.task.loss(outputs, batch.targets), prog_bar=True)
        for name, value in self.task.metrics(outputs, batch.targets).items():
            self.log(f"val/{name}", value, prog_bar=name == "accuracy")

    def on_validation_epoch_end(self) -> None:
        self.log("val/baseline_loss", self.task.baseline_loss())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip with ``clip.*`` and keep the pre-clip norm (Lightning's own clipping drops it)."""
        params = [p for p in self.parameters() if p.grad is not None]
        if not params:
            return
        if self.clip_max_norm is None:
            self.pre_clip_norm = nn.utils.get_total_norm([p.grad for p in params])
            self.post_clip_norm = self.pre_clip_norm
            self.clipped = torch.zeros((), device=self.pre_clip_norm.device)
        elif self.clip_algorithm == "norm":
            self.pre_clip_norm = nn.utils.clip_grad_norm_(params, self.clip_max_norm)
            self.clipped = (self.pre_clip_norm > self.clip_max_norm).float()
            self.post_clip_norm = torch.minimum(
                self.pre_clip_norm, torch.as_tensor(self.clip_max_norm, device=self.pre_clip_norm.device)
            )
        else:
            grads = [p.grad for p in params]
            self.pre_clip_norm = nn.utils.get_total_norm(grads)
            largest = torch.stack([g.detach().abs().max() for g in grads]).max()
            self.clipped = (largest > self.clip_max_norm).float()
            nn.utils.clip_grad_value_(params, self.clip_max_norm)
            self.post_clip_norm = nn.utils.get_total_norm(grads)
