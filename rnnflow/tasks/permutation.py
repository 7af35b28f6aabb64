"""Random permutation / first-symbol recall (Martens & Sutskever 2011; Pascanu et al. 2013).

Input: T symbols drawn uniformly from ``vocab_size`` symbols (one-hot). Target: the *first*
symbol, read out at the last step: the network must keep it across T - 1 distractors.

Cross-entropy; trivial baseline ``ln vocab_size`` (the later symbols carry no information about
the first); solved when accuracy ≥ 0.99.
"""

from __future__ import annotations

import torch

from rnnflow.tasks.base import ClassificationAtEnd, TaskBatch


class PermutationTask(ClassificationAtEnd):
    name = "permutation"

    def __init__(self, seq_len: int, vocab_size: int = 10) -> None:
        super().__init__(seq_len)
        if vocab_size < 2:
            raise ValueError(f"task.vocab_size={vocab_size}: expected an integer >= 2")
        self.vocab_size = self.input_size = self.num_classes = vocab_size

    def generate(self, batch_size: int, generator: torch.Generator, device: torch.device) -> TaskBatch:
        inputs = torch.randint(
            0, self.vocab_size, (batch_size, self.seq_len), generator=generator, device=device
        )
        return TaskBatch(inputs, inputs[:, 0].clone())
