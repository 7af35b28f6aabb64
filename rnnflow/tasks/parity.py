"""Parity (the parity problem of Bengio, Simard & Frasconi 1994; Hochreiter & Schmidhuber 1996).

Encoding: T bits ``b_t ∈ {0, 1}``, uniform and independent, one float feature per step.

Target: ``b_0 ⊕ b_1 ⊕ … ⊕ b_{T-1}`` (XOR of all bits, i.e. ``Σ_t b_t mod 2``), read out at the last
step. Every bit matters, the first as much as the last: the gradient must reach back all T steps.
Loss: cross-entropy over 2 classes.

Trivial baseline: any T - 1 of the bits leave the parity uniform, so without the whole sequence
the best guess is ½/½: ``ln 2``. Solved when accuracy ≥ 0.99. (Hochreiter & Schmidhuber, "Bridging
long time lags by weight guessing and LSTM", 1996, show that short parity problems are solved
faster by random weight guessing than by the gradient methods they were used to promote.)

Shapes: inputs ``(B, T, 1)`` float, targets ``(B,)`` long, output ``(B, 2)``.
"""

from __future__ import annotations

import torch

from rnnflow.tasks.base import ClassificationAtEnd, TaskBatch


class ParityTask(ClassificationAtEnd):
    name = "parity"
    input_size = 1
    num_classes = 2

    def generate(self, batch_size: int, generator: torch.Generator, device: torch.device) -> TaskBatch:
        bits = torch.randint(0, 2, (batch_size, self.seq_len), generator=generator, device=device)
        return TaskBatch(bits.unsqueeze(-1).float(), bits.sum(dim=1) % 2)
