"""The interface every synthetic task implements.

A task turns a ``torch.Generator`` into a batch ``(inputs, targets)`` with the batch
dimension first:

* ``inputs``: ``(B, T, F)`` float features, or ``(B, T)`` integer tokens when the task
  declares ``vocab_size`` (the model one-hot encodes them);
* ``targets``: whatever :meth:`SyntheticTask.loss` expects;
* ``lengths``: ``(B,)`` long, the length of each sequence when lengths vary (``None`` when
  every sequence fills all ``total_len`` steps). Shorter sequences are *left*-padded with
  zero feature vectors (see :mod:`rnnflow.tasks.padding`), so the last step is every
  sequence's own last step and a read-out at the last step needs no per-sequence index.

The model reads out either the last step (``readout == "last"``, output ``(B, O)``) or
every step (``readout == "all"``, output ``(B, T, O)``).

Every task states the loss of its trivial baseline (the best predictor that ignores the
long dependency), so a run can be judged against it: a loss that stays at the baseline
means the gradient never carried the dependency back. Every task also states a success
criterion, :meth:`SyntheticTask.solved` (logged as ``val/solved``), in words in
:attr:`SyntheticTask.criterion`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch

Readout = Literal["last", "all"]

#: Accuracy a run must reach to count as solved (error below 1%), on tasks judged by accuracy.
SOLVED_ACCURACY = 0.99


@dataclass
class TaskBatch:
    """One batch: ``inputs`` (B, T, F) float or (B, T) long, ``targets`` task-specific.

    ``lengths`` (B,) long: each sequence's own length when lengths vary (left-padded to T),
    else ``None``.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    lengths: torch.Tensor | None = None


class SyntheticTask(ABC):
    """A generator of batches plus the task's loss, metrics, trivial baseline and success criterion.

    Attributes:
        seq_len: the task's T, the length of the dependency (the input may be longer).
        input_size: feature size the model sees (after one-hot encoding of tokens).
        vocab_size: number of input tokens when inputs are integer tokens, else None.
        output_size: size of the model's read-out per step.
        readout: ``"last"`` (one prediction per sequence) or ``"all"`` (one per step).
        has_accuracy: whether :meth:`metrics` reports ``accuracy``.
        criterion: the success criterion of :meth:`solved`, in words.
    """

    name: str = ""
    input_size: int
    vocab_size: int | None = None
    output_size: int
    readout: Readout
    has_accuracy: bool = False
    criterion: str = ""

    def __init__(self, seq_len: int) -> None:
        require_int("seq_len", seq_len, 1)
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
        """Expected loss of the trivial predictor that ignores the long-range dependency."""

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra validation metrics (e.g. ``accuracy``), each a batch mean; empty by default."""
        return {}

    @abstractmethod
    def solved(self, val_loss: float, metrics: dict[str, float]) -> bool:
        """Whether the validation loss and metrics (batch means) meet the task's success criterion.

        Logged as ``val/solved``. A perfect predictor is solved; the trivial baseline is not.
        """


class ClassificationAtEnd(SyntheticTask):
    """A task with one class label per sequence, read out at the last step.

    Loss: cross-entropy ``-mean_b log softmax(ŷ_b)[y_b]``; metric ``accuracy``; trivial baseline
    ``ln C`` (the class distribution, uniform over C classes, guessed without the dependency).
    Solved when ``accuracy ≥ 0.99``: fewer than 1% of the sequences misclassified (the 1% error
    rate of Hochreiter & Schmidhuber 1997's classification tasks; Pascanu et al. 2013's released
    code, pascanur/trainingRNNs, is stricter: it stops at no error on 10,000 sequences).
    Shapes: output ``(B, C)``, targets ``(B,)`` long.
    """

    readout = "last"
    has_accuracy = True
    criterion = f"accuracy >= {SOLVED_ACCURACY}"
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
        return metrics.get("accuracy", 0.0) >= SOLVED_ACCURACY


def require_int(key: str, value: Any, minimum: int) -> None:
    """Raise ``ValueError("task.<key>=<value>: expected an integer >= <minimum>")`` unless it is one."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"task.{key}={value!r}: expected an integer >= {minimum}")


def require_choice(key: str, value: Any, accepted: Iterable[Any]) -> None:
    """Raise ``ValueError("task.<key>=<value>: expected one of ...")`` unless ``value`` is accepted."""
    accepted = tuple(accepted)
    if isinstance(value, bool) or value not in accepted:
        raise ValueError(f"task.{key}={value!r}: expected one of {', '.join(map(str, accepted))}")


def uniform_int(
    low: int | torch.Tensor,
    high: int | torch.Tensor,
    size: int,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """``size`` integers uniform in ``[low, high)`` (``high > low``); ``low``/``high`` may be per-row tensors.

    ``low + ⌊u · (high - low)⌋`` with ``u ~ U[0, 1)``, capped at ``high - 1`` against float rounding.
    """
    span = torch.as_tensor(high - low, device=device)
    offset = (torch.rand(size, generator=generator, device=device) * span).long()
    return low + torch.minimum(offset, span - 1)
