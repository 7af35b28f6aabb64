"""Temporal order, 2-bit and 3-bit (Hochreiter & Schmidhuber 1997, tasks 6a/6b; Pascanu et al. 2013).

Encoding: one-hot float vectors (``input_size`` symbols; ``vocab_size`` is None so that padding can
be an all-zero vector). Symbols: distractors ``a b c d`` (0–3), relevant ``X Y`` (4, 5) and, in the
``hochreiter`` variant, ``E`` (6, first step) and ``B`` (7, the "trigger symbol" at the last step).
Every step holds a random distractor except ``bits`` relevant steps ``t_1 < … < t_bits``, each
uniform in its window and holding ``X`` or ``Y`` with probability ½.

``task.variant``, with ``T = seq_len``:

``pascanu`` (default; Pascanu et al. 2013, as in their released ``tempOrder.py``/``tempOrder3bit.py``,
    6 symbols): fixed length T; windows ``[⌊pT⌋, ⌊pT⌋ + ⌊T/10⌋)`` for ``p = 0.1, 0.5`` (2 bits) or
    ``p = 0.1, 0.3, 0.6`` (3 bits).
``hochreiter`` (H&S 1997, 8 symbols): length ``L ∈ [T, 1.1 T]`` per sequence, left-padded with zero
    vectors (:mod:`rnnflow.tasks.padding`); the sequence starts with ``E`` and ends with ``B``; windows
    (inclusive, from the sequence's own start) ``[0.1T, 0.2T]``, ``[0.5T, 0.6T]`` (6a: "t1 between 10
    and 20, t2 between 50 and 60" for lengths 100–110) or ``[0.1T, 0.2T]``, ``[0.33T, 0.43T]``,
    ``[0.66T, 0.76T]`` (6b), each bound rounded down.

Target: the ordered pattern of relevant symbols as a class ``c = Σ_k [s_k = Y] · 2^(bits-1-k)``
(XX → 0, XY → 1, YX → 2, YY → 3: H&S's classes Q, R, S, U; 8 classes for 3 bits), read out at the
last step. Loss: cross-entropy. Trivial baseline: the classes are equiprobable and independent of
everything but the relevant symbols, so ``ln 4`` (2 bits) or ``ln 8`` (3 bits). Solved when
accuracy ≥ 0.99 (:class:`~rnnflow.tasks.base.ClassificationAtEnd`).

Shapes: inputs ``(B, T_total, 6 or 8)`` float, targets ``(B,)`` long, output ``(B, 2^bits)``.
"""

from __future__ import annotations

import torch

from rnnflow.tasks.base import ClassificationAtEnd, TaskBatch, require_choice, require_int, uniform_int
from rnnflow.tasks.padding import draw_lengths, max_length, sequence_starts, step_mask

N_DISTRACTORS, X, Y, START, TRIGGER = 4, 4, 5, 6, 7
VARIANTS = ("pascanu", "hochreiter")
N_SYMBOLS = {"pascanu": 6, "hochreiter": 8}
# Window starts (pascanu, width ⌊T/10⌋) and inclusive bounds (hochreiter), in percent of T.
PASCANU_STARTS = {2: (10, 50), 3: (10, 30, 60)}
HOCHREITER_WINDOWS = {2: ((10, 20), (50, 60)), 3: ((10, 20), (33, 43), (66, 76))}
MIN_SEQ_LEN = 10


class TemporalOrderTask(ClassificationAtEnd):
    name = "temporal_order"

    def __init__(self, seq_len: int, bits: int = 2, variant: str = "pascanu") -> None:
        super().__init__(seq_len)
        require_choice("bits", bits, (2, 3))
        require_choice("variant", variant, VARIANTS)
        require_int("seq_len", seq_len, MIN_SEQ_LEN)  # every window at least one step wide, disjoint
        self.bits, self.variant = bits, variant
        self.num_classes = 2**bits
        self.input_size = N_SYMBOLS[variant]

    @property
    def total_len(self) -> int:
        return self.seq_len if self.variant == "pascanu" else max_length(self.seq_len)

    def windows(self) -> list[tuple[int, int]]:
        """Half-open ``[low, high)`` window of each relevant step, relative to the sequence start."""
        T = self.seq_len
        if self.variant == "pascanu":
            return [(T * p // 100, T * p // 100 + T // 10) for p in PASCANU_STARTS[self.bits]]
        return [(T * low // 100, T * high // 100 + 1) for low, high in HOCHREITER_WINDOWS[self.bits]]

    def generate(self, batch_size: int, generator: torch.Generator, device: torch.device) -> TaskBatch:
        total = self.total_len
        symbols = torch.randint(0, N_DISTRACTORS, (batch_size, total), generator=generator, device=device)
        rows = torch.arange(batch_size, device=device)
        if self.variant == "pascanu":
            lengths, start = None, torch.zeros(batch_size, dtype=torch.long, device=device)
        else:
            lengths = draw_lengths(self.seq_len, batch_size, generator, device)
            start = sequence_starts(lengths, total)
            symbols[rows, start] = START
            symbols[:, -1] = TRIGGER
        targets = torch.zeros(batch_size, dtype=torch.long, device=device)
        for low, high in self.windows():
            step = start + uniform_int(low, high, batch_size, generator, device)
            is_y = torch.randint(0, 2, (batch_size,), generator=generator, device=device)
            symbols[rows, step] = X + is_y
            targets = 2 * targets + is_y
        inputs = torch.nn.functional.one_hot(symbols, self.input_size).float()
        if lengths is not None:
            inputs = inputs * step_mask(lengths, total)[..., None]
        return TaskBatch(inputs, targets, lengths)
