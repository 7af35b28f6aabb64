"""Random permutation / first-symbol recall (Martens & Sutskever 2011; Pascanu et al. 2013).

After Hochreiter & Schmidhuber 1997's "noise-free sequences" (task 2a), as in Pascanu's released
generator (github.com/pascanur/trainingRNNs, ``permutation.py``: 100 symbols, first symbol one of 2).

Encoding: T integer tokens from ``vocab_size`` symbols (one-hot encoded by the model). The first token
``x_0`` is uniform over the ``first_symbols`` symbols ``0 … first_symbols-1``; the ``T - 1`` tokens
after it are uniform over the other symbols ``first_symbols … vocab_size-1`` (distractors).

Target: the first symbol ``x_0``, read out at the last step, a class in ``0 … first_symbols-1``: the
network must keep it across ``T - 1`` distractors. Loss: cross-entropy.

Trivial baseline: the distractors carry no information about ``x_0``, so the best predictor without
the dependency guesses uniformly over the ``first_symbols`` classes: ``ln first_symbols``
(``ln 2`` by default). Solved when accuracy ≥ 0.99.

Shapes: inputs ``(B, T)`` long, targets ``(B,)`` long, output ``(B, first_symbols)``.
"""

from __future__ import annotations

import torch

from rnnflow.tasks.base import ClassificationAtEnd, TaskBatch, require_int


class PermutationTask(ClassificationAtEnd):
    name = "permutation"

    def __init__(self, seq_len: int, vocab_size: int = 100, first_symbols: int = 2) -> None:
        super().__init__(seq_len)
        require_int("seq_len", seq_len, 2)
        require_int("first_symbols", first_symbols, 2)
        require_int("vocab_size", vocab_size, first_symbols + 1)
        self.vocab_size = self.input_size = vocab_size
        self.num_classes = first_symbols

    def generate(self, batch_size: int, generator: torch.Generator, device: torch.device) -> TaskBatch:
        shape = (batch_size, self.seq_len)
        inputs = torch.randint(self.num_classes, self.vocab_size, shape, generator=generator, device=device)
        first = torch.randint(0, self.num_classes, (batch_size,), generator=generator, device=device)
        inputs[:, 0] = first
        return TaskBatch(inputs, first)
