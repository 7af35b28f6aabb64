"""The LightningModule: forward, task loss, validation metrics, truncated BPTT.

Per training step on a batch ``(x, y)``:

    ŷ = RecurrentNet(x);  L = task.loss(ŷ, y);  g = ∂L/∂θ

Everything that measures or guards the step is a callback, not part of the module: gradient flow
(:class:`rnnflow.callbacks.gradient_flow.GradientFlowMonitor`, which probes the model's recurrent
layers itself), clipping and its statistics (:class:`rnnflow.callbacks.clipping.ClipMonitor`), the
non-finite policy (:class:`rnnflow.runtime.nonfinite.NonFiniteGuard`); they all act in Lightning's
hooks, which run for manual optimization too.

Truncated BPTT (``tbptt.chunk = k``): each sequence is split into chunks of k steps
``x = [x_{0:k}, x_{k:2k}, …]``; the hidden state is carried from chunk to chunk and
detached, so no gradient flows back across a chunk boundary; each chunk that carries a loss
gets its own backward and optimizer step (manual optimization: Lightning 2 has no built-in
TBPTT). Read-out ``all`` tasks: chunk loss ``task.loss(ŷ_chunk, y_chunk)``; read-out ``last``
tasks: only the last chunk has a loss (one optimizer step per sequence, with the gradient
truncated to its last k steps). ``optimizer_steps_per_batch`` says how many optimizer steps a
batch takes (:func:`rnnflow.callbacks.schedule.is_last_batch` reads it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

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
        tbptt_chunk: int | None = None,
        hparams: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.optimizer_factory = optimizer
        self.tbptt_chunk = tbptt_chunk
        self.automatic_optimization = tbptt_chunk is None
        # Plain python values only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(hparams or {}, logger=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs)

    @property
    def optimizer_steps_per_batch(self) -> int:
        """Optimizer steps one batch takes (chunks with a loss under truncated BPTT, else 1)."""
        if self.tbptt_chunk is None or self.task.readout == "last":
            return 1
        return math.ceil(self.task.total_len / self.tbptt_chunk)

    def training_step(self, batch: TaskBatch, batch_idx: int) -> torch.Tensor | None:
        if self.tbptt_chunk is not None:
            return self._truncated_bptt_step(batch)
        loss = self.task.loss(self.model(batch.inputs), batch.targets)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.inputs.size(0))
        return loss

    def _truncated_bptt_step(self, batch: TaskBatch) -> None:
        optimizer = self.optimizers()
        chunks = batch.inputs.split(self.tbptt_chunk, dim=1)
        states = None
        outputs = []
        for index, chunk in enumerate(chunks):
            output, states = self.model(chunk, states=states, return_states=True)
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


def _detached(state: Any) -> Any:
    """A layer's final state cut from the graph (a tensor, or the LSTM's ``(h, c)``)."""
    return tuple(part.detach() for part in state) if isinstance(state, tuple) else state.detach()
