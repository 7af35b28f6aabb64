"""Parity (Hochreiter & Schmidhuber 1997; Bengio et al. 1994's latch-like bit problems).

Input: T bits ``b_t ∈ {0, 1}`` (one float feature per step). Target: ``b_0 ⊕ b_1 ⊕ … ⊕ b_{T-1}``,
read out at the last step. Every bit matters, the first as much as the last: the gradient of the
loss must reach back all T steps.

Cross-entropy over 2 classes; trivial baseline ``ln 2``; solved when accuracy ≥ 0.99.
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
