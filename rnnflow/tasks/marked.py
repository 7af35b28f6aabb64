"""The marked-value problems (adding, multiplication): two marked steps in a long sequence, per variant.

Encoding: each step carries two features, a value ``v_t`` and a marker ``m_t``; exactly two steps
have ``m_t = 1``. Their values ``v_1`` (the earlier) and ``v_2`` define the target, read out at the
last step: ``(B, T_total, 2)`` float inputs, ``(B,)`` targets, model output ``(B, 1)``, loss the MSE.

Variants, with ``T = seq_len`` (positions counted from the sequence's own first step):

``standard``
    Arjovsky, Shah & Bengio 2016, §4.2. Fixed length T; ``v_t ~ U[0, 1]``; ``m_t ∈ {0, 1}``; one
    marker uniform in the first half ``[0, ⌊T/2⌋)``, the other in the second half ``[⌊T/2⌋, T)``.

``pascanu``
    Pascanu, Mikolov & Bengio 2013 after Martens & Sutskever 2011, as in Pascanu's released
    generators (github.com/pascanur/trainingRNNs, ``addition.py``/``multiplication.py``): length
    ``L ∈ [T, 1.1 T]`` (:mod:`rnnflow.tasks.padding`; their code draws one length per batch, here
    each sequence draws its own); ``v_t ~ U[0, 1]``; first marker uniform in the first tenth
    ``[0, ⌊L/10⌋)``, second in ``[⌊L/10⌋, ⌊L/2⌋)``.

``hochreiter``
    Hochreiter & Schmidhuber 1997, §5.4 (adding) and §5.5 (multiplication): length ``L ∈ [T, 1.1 T]``;
    ``v_t ~ U[-1, 1]`` (adding) or ``U[0, 1]`` (multiplication); ``m = -1`` at the first and the last
    step of the sequence; one marker uniform among steps ``1 … 9`` (H&S: one of the first ten pairs),
    the other uniform among steps ``1 … ⌊T/2⌋ - 1`` except that one (H&S: one of the first
    ``T/2 - 1`` still unmarked pairs). Step 0 is never marked (the paper marks it in rare cases and
    then sets ``X_1 = 0``; here that case does not occur).

Padding steps (left, variable-length variants) have ``v = m = 0``.

Success: variants whose source judges each sequence report ``accuracy``, the fraction of sequences
with ``|ŷ - y| < tol`` (``hochreiter``: 0.04, H&S's "absolute error at sequence end below 0.04";
``pascanu``: 0.2, Pascanu's code counting a squared error above 0.04 as an error), and are solved
when ``accuracy ≥ 0.99``. The ``standard`` variant has no per-sequence tolerance in its source and
is solved when the MSE is below a threshold stated by each task.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import torch

from rnnflow.tasks.base import SOLVED_ACCURACY, SyntheticTask, TaskBatch, require_choice, uniform_int
from rnnflow.tasks.padding import draw_lengths, max_length, sequence_starts, step_mask

VARIANTS = ("standard", "pascanu", "hochreiter")
MIN_SEQ_LEN = {"standard": 2, "pascanu": 10, "hochreiter": 20}
TOLERANCE: dict[str, float | None] = {"standard": None, "pascanu": 0.2, "hochreiter": 0.04}
HOCHREITER_FIRST_WINDOW = 10  # the first marker lies in one of the first ten steps


@dataclass
class MarkedSteps:
    """A drawn layout: ``values``/``markers`` (B, T_total), marked steps ``first < second`` (B,)."""

    values: torch.Tensor
    markers: torch.Tensor
    first: torch.Tensor
    second: torch.Tensor
    lengths: torch.Tensor | None


def draw_marked_steps(
    variant: str,
    seq_len: int,
    value_range: tuple[float, float],
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
) -> MarkedSteps:
    """Values, markers and the two marked steps of one batch in the layout of ``variant``."""
    low, high = value_range
    rows = torch.arange(batch_size, device=device)
    if variant == "standard":
        total, half = seq_len, seq_len // 2
        values = low + (high - low) * torch.rand(batch_size, total, generator=generator, device=device)
        first = uniform_int(0, half, batch_size, generator, device)
        second = uniform_int(half, total, batch_size, generator, device)
        markers = torch.zeros(batch_size, total, device=device)
        lengths = None
    else:
        total = max_length(seq_len)
        lengths = draw_lengths(seq_len, batch_size, generator, device)
        start = sequence_starts(lengths, total)
        values = low + (high - low) * torch.rand(batch_size, total, generator=generator, device=device)
        values = values * step_mask(lengths, total)
        markers = torch.zeros(batch_size, total, device=device)
        if variant == "pascanu":
            first = start + uniform_int(0, lengths // 10, batch_size, generator, device)
            second = start + uniform_int(lengths // 10, lengths // 2, batch_size, generator, device)
        else:  # hochreiter: second uniform over {1, …, ⌊T/2⌋-1} \ {first}
            first_offset = uniform_int(1, HOCHREITER_FIRST_WINDOW, batch_size, generator, device)
            draw = uniform_int(1, seq_len // 2 - 1, batch_size, generator, device)
            first, second = start + first_offset, start + draw + (draw >= first_offset).long()
            first, second = torch.minimum(first, second), torch.maximum(first, second)
            markers[rows, start] = -1.0
            markers[:, -1] = -1.0
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    return MarkedSteps(values, markers, first, second, lengths)


class MarkedValueTask(SyntheticTask):
    """Shared generator, loss, metrics and criterion of the adding and multiplication problems.

    Subclasses define :meth:`target` (of ``v_1, v_2``), :meth:`value_range`, :meth:`baseline_loss`
    and ``standard_threshold`` (the MSE below which the ``standard`` variant is solved).
    """

    input_size = 2
    output_size = 1
    readout = "last"
    variants: tuple[str, ...] = VARIANTS
    standard_threshold: float

    def __init__(self, seq_len: int, variant: str = "standard") -> None:
        super().__init__(seq_len)
        require_choice("variant", variant, self.variants)
        minimum = MIN_SEQ_LEN[variant]
        if seq_len < minimum:
            raise ValueError(
                f"task.seq_len={seq_len}: expected an integer >= {minimum} for task.variant={variant}"
            )
        self.variant = variant
        self.tolerance = TOLERANCE[variant]
        self.has_accuracy = self.tolerance is not None
        self.criterion = (
            f"MSE < {self.standard_threshold}"
            if self.tolerance is None
            else f"accuracy >= {SOLVED_ACCURACY} (|error| < {self.tolerance} per sequence)"
        )

    @property
    def total_len(self) -> int:
        return self.seq_len if self.variant == "standard" else max_length(self.seq_len)

    @abstractmethod
    def value_range(self) -> tuple[float, float]:
        """``(low, high)`` of the uniform values ``v_t``."""

    @abstractmethod
    def target(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """The target ``y`` from the two marked values ``v_1`` (earlier) and ``v_2``."""

    def generate(self, batch_size: int, generator: torch.Generator, device: torch.device) -> TaskBatch:
        steps = draw_marked_steps(
            self.variant, self.seq_len, self.value_range(), batch_size, generator, device
        )
        rows = torch.arange(batch_size, device=device)
        targets = self.target(steps.values[rows, steps.first], steps.values[rows, steps.second])
        return TaskBatch(torch.stack([steps.values, steps.markers], dim=-1), targets, steps.lengths)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(outputs.squeeze(-1), targets)

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.tolerance is None:
            return {}
        return {"accuracy": ((outputs.squeeze(-1) - targets).abs() < self.tolerance).float().mean()}

    def solved(self, val_loss: float, metrics: dict[str, float]) -> bool:
        if self.tolerance is None:
            return val_loss < self.standard_threshold
        return metrics.get("accuracy", 0.0) >= SOLVED_ACCURACY
