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
