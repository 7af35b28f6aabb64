"""The interface every synthetic task implements.

A task turns a ``torch.Generator`` into a batch ``(inputs, targets)`` with the batch
dimension first:

* ``inputs``: ``(B, T, F)`` float features, or ``(B, T)`` integer tokens when the task
  declares ``vocab_size`` (the model one-hot encodes them);
* ``targets``: whatever :meth:`SyntheticTask.loss` expects.

The model reads out either the last step (``readout == "last"``, output ``(B, O)``) or
every step (``readout == "all"``, output ``(B, T, O)``).

Every task states the loss of its trivial baseline (the best predictor that ignores the
long dependency), so a run can be judged against it: a loss that stays at the baseline
means the gradient never carried the dependency back.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch

Readout = Literal["last", "all"]


@dataclass
class TaskBatch:
    """One batch: ``inputs`` (B, T, F) float or (B, T) long, ``targets`` task-specific."""

    inputs: torch.Tensor
    targets: torch.Tensor


class SyntheticTask(ABC):
    """A generator of batches plus the task's loss, metrics and trivial baseline.

    Attributes:
        seq_len: the task's T (the length of the dependency; the input may be longer).
        input_size: feature size the model sees (after one-hot encoding of tokens).
        vocab_size: number of input tokens when inputs are integer tokens, else None.
        output_size: size of the model's read-out per step.
        readout: ``"last"`` (one prediction per sequence) or ``"all"`` (one per step).
        has_accuracy: whether :meth:`metrics` reports ``accuracy``.
    """

    name: str = ""
    input_size: int
    vocab_size: int | None = None
    output_size: int
    readout: Readout
    has_accuracy: bool = False

    def __init__(self, seq_len: int) -> None:
        if seq_len < 1:
            raise ValueError(f"task.seq_len={seq_len}: expected a positive integer")
        self.seq_len = seq_len

    @property
    def total_len(self) -> int:
        """Length of the input sequence fed to the network (>= seq_len for some tasks)."""
        return self.seq_len

    @abstractmethod
    def generate(self, batch_size: int, generator: torch.Generator, device: torch.device) -> TaskBatch:
        """Draw one batch; all randomness comes from ``generator`` (same device as ``device``)."""

    @abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Scalar training loss of the model's read-out ``outputs`` against ``targets``."""

    @abstractmethod
    def baseline_loss(self) -> float:
        """Loss of the trivial predictor that ignores the long-range dependency."""

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra validation metrics (e.g. ``accuracy``); empty by default."""
        return {}

    @abstractmethod
    def solved(self, val_loss: float, metrics: dict[str, float]) -> bool:
        """The task's success criterion on the validation set (logged as ``val/solved``)."""


class ClassificationAtEnd(SyntheticTask):
    """A task with one class label per sequence, read out at the last step.

    Loss: cross-entropy; baseline ``ln C`` (uniform guess over C equiprobable classes);
    metric ``accuracy``; solved when ``accuracy ≥ 0.99`` (error below 1%, the criterion
    of Hochreiter & Schmidhuber 1997 and Pascanu et al. 2013 for their classification tasks).
    Shapes: output ``(B, C)``, targets ``(B,)`` long.
    """

    readout = "last"
    has_accuracy = True
    num_classes: int

    @property
    def output_size(self) -> int:  # type: ignore[override]
        return self.num_classes

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(outputs, targets)

    def baseline_loss(self) -> float:
        return math.log(self.num_classes)

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"accuracy": (outputs.argmax(dim=-1) == targets).float().mean()}

    def solved(self, val_loss: float, metrics: dict[str, float]) -> bool:
        return metrics.get("accuracy", 0.0) >= 0.99


def uniform_int(
    low: int | torch.Tensor,
    high: int | torch.Tensor,
    size: int,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """``size`` integers uniform in ``[low, high)``; ``low``/``high`` may be per-row tensors."""
    return low + (torch.rand(size, generator=generator, device=device) * (high - low)).long()
