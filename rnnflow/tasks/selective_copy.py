"""Selective copying (Gu & Dao 2023, "Mamba", §3.1; the "denoise" task of Jing et al. 2019).

Copy memory (:mod:`rnnflow.tasks.copy`, Arjovsky et al. 2016) with the data at random positions:
the network must select the content by what it is, not count steps.

Alphabet (``vocab_size = n_symbols + 2``): data symbols ``0 … n_symbols-1``, blank ``n_symbols``,
recall marker ``n_symbols + 1``.

Input, length ``T + n_copy`` (``T = seq_len``): ``n_copy`` data symbols, uniform over the data
alphabet, at ``n_copy`` distinct positions drawn uniformly among the first T steps (blanks
elsewhere), then ``n_copy`` markers. Target, same length: blank during the first T steps, then the
data symbols in their order of appearance during the marker steps.

Loss: cross-entropy over all ``T + n_copy`` steps, as in copy memory (Gu & Dao score the recall
steps only). Trivial baseline: a memoryless predictor outputs blank during the first T steps
(loss 0) and the uniform distribution over the data symbols at the ``n_copy`` recall steps:
``n_copy · ln n_symbols / (T + n_copy)``.

Metric ``accuracy``: the fraction of recalled symbols predicted correctly; solved when
accuracy ≥ 0.99.

Shapes: inputs ``(B, T + n_copy)`` long, targets ``(B, T + n_copy)`` long, output
``(B, T + n_copy, n_symbols + 2)``.
"""

from __future__ import annotations

import math

import torch

from rnnflow.tasks.base import SOLVED_ACCURACY, SyntheticTask, TaskBatch, require_int


class SelectiveCopyTask(SyntheticTask):
    name = "selective_copy"
    readout = "all"
    has_accuracy = True
    criterion = f"accuracy >= {SOLVED_ACCURACY} on the recalled symbols"

    def __init__(self, seq_len: int, n_copy: int = 4, n_symbols: int = 8) -> None:
        super().__init__(seq_len)
        require_int("n_copy", n_copy, 1)
        require_int("n_symbols", n_symbols, 2)
        if seq_len < n_copy:
            raise ValueError(
                f"task.seq_len={seq_len}: expected an integer >= task.n_copy={n_copy} "
                "(the symbols to copy need distinct positions)"
            )
        self.n_copy, self.n_symbols = n_copy, n_symbols
        self.blank, self.marker = n_symbols, n_symbols + 1
        self.vocab_size = self.input_size = self.output_size = n_symbols + 2

    @property
    def total_len(self) -> int:
        return self.seq_len + self.n_copy

    def generate(self, batch_size: int, generator: torch.Generator, device: torch.device) -> TaskBatch:
        T, n = self.seq_len, self.n_copy
        scores = torch.rand(batch_size, T, generator=generator, device=device)
        positions = scores.topk(n, dim=1).indices.sort(dim=1).values  # n distinct positions, in order
        data = torch.randint(0, self.n_symbols, (batch_size, n), generator=generator, device=device)
        inputs = torch.full((batch_size, self.total_len), self.blank, dtype=torch.long, device=device)
        inputs.scatter_(1, positions, data)
        inputs[:, T:] = self.marker
        targets = torch.full_like(inputs, self.blank)
        targets[:, T:] = data
        return TaskBatch(inputs, targets)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(outputs.flatten(0, 1), targets.flatten())

    def baseline_loss(self) -> float:
        return self.n_copy * math.log(self.n_symbols) / self.total_len

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        recalled = outputs[:, -self.n_copy :].argmax(dim=-1)
        return {"accuracy": (recalled == targets[:, -self.n_copy :]).float().mean()}

    def solved(self, val_loss: float, metrics: dict[str, float]) -> bool:
        return metrics.get("accuracy", 0.0) >= SOLVED_ACCURACY
