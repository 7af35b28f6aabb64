"""Temporal order, 2-bit and 3-bit (Hochreiter & Schmidhuber 1997, experiments 6a/6b; Pascanu et al. 2013).

Alphabet (``vocab_size = 8``): distractors ``a b c d`` (0–3), relevant symbols ``X Y``
(4, 5), start ``B`` (6) and end ``E`` (7). A sequence of length T starts with ``B``, ends
with ``E``, and is filled with random distractors except at ``bits`` relevant positions,
each drawn uniformly in its window and holding ``X`` or ``Y``:

* 2 bits: ``t_1 ∈ [0.1 T, 0.2 T)``, ``t_2 ∈ [0.5 T, 0.6 T)``;
* 3 bits: ``t_1 ∈ [0.1 T, 0.2 T)``, ``t_2 ∈ [0.3 T, 0.4 T)``, ``t_3 ∈ [0.6 T, 0.7 T)``.

Target: the ordered pattern of relevant symbols as a class, ``Σ_k [s_k = Y] 2^(bits-1-k)``:
4 classes (XX, XY, YX, YY) or 8. Read out at the last step; cross-entropy; trivial baseline
``ln 4`` or ``ln 8``; solved when accuracy ≥ 0.99.
"""

from __future__ import annotations

import torch

from rnnflow.tasks.base import ClassificationAtEnd, TaskBatch, uniform_int

X, START, END = 4, 6, 7
WINDOWS = {2: ((0.1, 0.2), (0.5, 0.6)), 3: ((0.1, 0.2), (0.3, 0.4), (0.6, 0.7))}


class TemporalOrderTask(ClassificationAtEnd):
    name = "temporal_order"
    vocab_size = 8
    input_size = 8

    def __init__(self, seq_len: int, bits: int = 2) -> None:
        super().__init__(seq_len)
        if bits not in WINDOWS:
            raise ValueError(f"task.bits={bits}: expected one of 2, 3")
        if seq_len < 20:
            raise ValueError(
                f"task.seq_len={seq_len}: temporal order needs seq_len >= 20 (one step per window)"
            )
        self.bits = bits
        self.num_classes = 2**bits

    def generate(self, batch_size: int, generator: torch.Generator, device: torch.device) -> TaskBatch:
        T = self.seq_len
        inputs = torch.randint(0, 4, (batch_size, T), generator=generator, device=device)
        inputs[:, 0], inputs[:, -1] = START, END
        rows = torch.arange(batch_size, device=device)
        targets = torch.zeros(batch_size, dtype=torch.long, device=device)
        for k, (low, high) in enumerate(WINDOWS[self.bits]):
            position = uniform_int(int(low * T), int(high * T), batch_size, generator, device)
            is_y = torch.randint(0, 2, (batch_size,), generator=generator, device=device)
            inputs[rows, position] = X + is_y
            targets += is_y << (self.bits - 1 - k)
        return TaskBatch(inputs, targets)
