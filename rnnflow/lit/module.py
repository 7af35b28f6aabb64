"""The LightningModule: forward, task loss, clipping with its statistics, non-finite policy.

Per training step on a batch ``(x, y)``:

    ŷ = RecurrentNet(x);  L = task.loss(ŷ, y);  g = ∂L/∂θ
    ‖g‖ = (Σ_p ‖g_p‖²)^½                        (pre-clip norm, always recorded)
    norm clipping:  g ← g · min(1, c / ‖g‖)      (clip.algorithm = norm, c = clip.max_norm)
    value clipping: g ← clamp(g, -c, c)          (clip.algorithm = value)

The clip statistics stay on the device (callbacks buffer them; no host sync per step).

Non-finite policy (``nonfinite.policy``): if ``L`` or ``‖g‖`` is not finite, the step
is *skipped* (gradients dropped, optimizer state untouched) and counted in
``nonfinite/events``; after ``nonfinite.max_consecutive`` skipped steps in a row the run
stops with a message. ``stop`` stops at the first one; ``raise`` raises
``FloatingPointError`` (non-zero exit). Deciding to skip needs the norm on the host: one
scalar sync per step, the same price ``torch.amp.GradScaler`` pays for its skips.

On probe steps a :class:`rnnflow.probes.gradient_flow.GradientFlowProbe` (set by
:class:`rnnflow.callbacks.gradient_flow.GradientFlowMonitor`) runs the layers.

Truncated BPTT (``tbptt.chunk = k``): each sequence is split into chunks of k steps
``x = [x_{0:k}, x_{k:2k}, …]``; the hidden state is carried from chunk to chunk and
detached, so no gradient flows back across a chunk boundary; each chunk that carries a loss
gets its own backward, clipping and optimizer step (manual optimization: Lightning 2 has
no built-in TBPTT). Read-out ``all`` tasks: chunk loss ``task.loss(ŷ_chunk, y_chunk)``;
read-out ``last`` tasks: only the last chunk has a loss (one optimizer step per sequence,
with the gradient truncated to its last k steps).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from rnnflow.models import RecurrentNet
from rnnflow.probes.gradient_flow import GradientFlowProbe
from rnnflow.tasks import SyntheticTask, TaskBatch

OptimizerFactory = Callable[..., torch.optim.Optimizer]
log = logging.getLogger(__name__)


class RecurrentTaskModule(L.LightningModule):
    """Trains a :class:`RecurrentNet` on a :class:`SyntheticTask`."""

    def __init__(
        self,
        model: RecurrentNet,
        task: SyntheticTask,
        optimizer: OptimizerFactory,
        clip_max_norm: float | None = None,
        clip_algorithm: str = "norm",
        nonfinite_policy: str = "skip",
        nonfinite_max_consecutive: int = 10,
        tbptt_chunk: int | None = None,
        hparams: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.optimizer_factory = optimizer
        self.clip_max_norm = clip_max_norm
        self.clip_algorithm = clip_algorithm
        self.nonfinite_policy = nonfinite_policy
        self.nonfinite_max_consecutive = nonfinite_max_consecutive
        self.tbptt_chunk = tbptt_chunk
        self.automatic_optimization = tbptt_chunk is None
        # Plain python values only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(hparams or {}, logger=False)
        self.probe: GradientFlowProbe | None = None
        # tensor([pre-clip norm, post-clip norm, clipped]) per optimizer step, left on the
        # device for ClipMonitor to drain at the end of the batch.
        self.clip_records: list[torch.Tensor] = []
        self.nonfinite_events = 0
        self.nonfinite_consecutive = 0

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs)

    @property
    def steps_per_batch(self) -> int:
        """Optimizer steps one batch takes (chunks with a loss under truncated BPTT, else 1)."""
        if self.tbptt_chunk is None or self.task.readout == "last":
            return 1
        return math.ceil(self.task.total_len / self.tbptt_chunk)

    def training_step(self, batch: TaskBatch, batch_idx: int) -> torch.Tensor | None:
        if self.tbptt_chunk is not None:
            return self._truncated_bptt_step(batch)
        layer_call = self.probe.layer_call if self.probe is not None else None
        loss = self.task.loss(self.model(batch.inputs, layer_call=layer_call), batch.targets)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.inputs.size(0))
        return loss

    def _truncated_bptt_step(self, batch: TaskBatch) -> None:
        optimizer = self.optimizers()
        layer_call = self.probe.layer_call if self.probe is not None else None
        chunks = batch.inputs.split(self.tbptt_chunk, dim=1)
        states = None
        outputs = []
        for index, chunk in enumerate(chunks):
            output, states = self.model(chunk, layer_call=layer_call, states=states, return_states=True)
            states = [_detached(state) for state in states]
            outputs.append(output.detach())
            if self.task.readout == "last" and index < len(chunks) - 1:
                continue
            if self.task.readout == "last":
                loss = self.task.loss(output, batch.targets)
            else:
                start = index * self.tbptt_chunk
                loss = self.task.loss(output, batch.targets[:, start : start + chunk.size(1)])
            optimizer.zero_grad()
            self.manual_backward(loss)
            self.configure_gradient_clipping(optimizer)
            optimizer.step()
        full = outputs[-1] if self.task.readout == "last" else torch.cat(outputs, dim=1)
        self.log(
            "train/loss", self.task.loss(full, batch.targets), prog_bar=True, batch_size=batch.inputs.size(0)
        )

    def on_validation_epoch_start(self) -> None:
        self._val_sums: dict[str, float] = {}
        self._val_batches = 0

    def validation_step(self, batch: TaskBatch, batch_idx: int) -> None:
        outputs = self.model(batch.inputs)
        values = {"loss": self.task.loss(outputs, batch.targets), **self.task.metrics(outputs, batch.targets)}
        for name, value in values.items():
            self.log(
                f"val/{name}", value, prog_bar=name in ("loss", "accuracy"), batch_size=batch.inputs.size(0)
            )
            self._val_sums[name] = self._val_sums.get(name, 0.0) + float(value)
        self._val_batches += 1

    def on_validation_epoch_end(self) -> None:
        self.log("val/baseline_loss", self.task.baseline_loss())
        solved = getattr(self.task, "solved", None)
        if solved is not None and self._val_batches:
            means = {name: total / self._val_batches for name, total in self._val_sums.items()}
            loss = means.pop("loss")
            self.log("val/solved", float(solved(loss, means)))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip with ``clip.*``, keep the pre-clip norm (Lightning's clipping drops it), apply the policy."""
        params = [p for p in self.parameters() if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        if self.clip_max_norm is None:
            pre = post = nn.utils.get_total_norm(grads)
            clipped = torch.zeros_like(pre)
        elif self.clip_algorithm == "norm":
            pre = nn.utils.clip_grad_norm_(params, self.clip_max_norm)
            clipped = (pre > self.clip_max_norm).to(pre.dtype)
            post = pre.clamp(max=self.clip_max_norm)
        else:
            pre = nn.utils.get_total_norm(grads)
            largest = torch.stack([g.detach().abs().amax() for g in grads]).amax()
            clipped = (largest > self.clip_max_norm).to(pre.dtype)
            nn.utils.clip_grad_value_(params, self.clip_max_norm)
            post = nn.utils.get_total_norm(grads)
        self.clip_records.append(torch.stack([pre, post, clipped]).detach())
        self._apply_nonfinite_policy(params, pre)

    def _apply_nonfinite_policy(self, params: list[nn.Parameter], pre_clip_norm: torch.Tensor) -> None:
        norm = float(pre_clip_norm)  # the one host sync per step (see module docstring)
        if math.isfinite(norm):
            self.nonfinite_consecutive = 0
            return
        for param in params:  # the optimizer skips parameters without a gradient
            param.grad = None
        self.nonfinite_events += 1
        self.nonfinite_consecutive += 1
        message = (
            f"non-finite loss or gradient at step {self.global_step} "
            f"({self.nonfinite_consecutive} in a row, {self.nonfinite_events} in all)"
        )
        if self.nonfinite_policy == "raise":
            raise FloatingPointError(message + "; nonfinite.policy=raise")
        if self.nonfinite_policy == "stop" or self.nonfinite_consecutive >= self.nonfinite_max_consecutive:
            log.error(
                "%s: stopping (nonfinite.policy=%s, max_consecutive=%d); the last checkpoint keeps the "
                "last finite weights",
                message,
                self.nonfinite_policy,
                self.nonfinite_max_consecutive,
            )
            self.trainer.should_stop = True
        else:
            log.warning("%s: step skipped (nonfinite.policy=skip)", message)

    def on_train_batch_end(self, *args: Any) -> None:
        self.log("nonfinite/events", float(self.nonfinite_events))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rnnflow"] = {
            "nonfinite_events": self.nonfinite_events,
            "nonfinite_consecutive": self.nonfinite_consecutive,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("rnnflow", {})
        self.nonfinite_events = int(state.get("nonfinite_events", 0))
        self.nonfinite_consecutive = int(state.get("nonfinite_consecutive", 0))


def _detached(state: Any) -> Any:
    """A layer's final state cut from the graph (a tensor, or the LSTM's ``(h, c)``)."""
    return tuple(part.detach() for part in state) if isinstance(state, tuple) else state.detach()
