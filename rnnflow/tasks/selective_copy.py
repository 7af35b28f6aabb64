"""Selective copying (Gu & Dao 2023, "Mamba", §3.1; after Arjovsky et al.'s copy memory).

Alphabet: data symbols ``0 … n_symbols-1``, blank ``n_symbols``, recall marker ``n_symbols+1``.
Input, length ``T + n_copy``: ``n_copy`` data symbols at sorted random distinct positions of the
first T steps (blanks elsewhere), then ``n_copy`` markers. Target: blanks, then the data symbols
in their order of appearance during the marker steps.

Unlike copy memory, the positions vary: the network must select the content, not count steps.
Cross-entropy over all steps; trivial baseline ``n_copy · ln n_symbols / (T + n_copy)`` (blank
where blank, uniform over the symbols at the recall steps); metric ``accuracy`` on the recalled
symbols; solved when accuracy ≥ 0.99.
"""

from __future__ import annotations

import math

import torch

from rnnflow.tasks.base import SyntheticTask, TaskBatch


class SelectiveCopyTask(SyntheticTask):
    name = "selective_copy"
    readout = "all"
    has_accuracy = True

    def __init__(self, seq_len: int, n_copy: int = 4, n_symbols: int = 8) -> None:
        super().__init__(seq_len)
        if n_copy < 1 or n_symbols < 2:
            raise ValueError(f"task.n_copy={n_copy}, task.n_symbols={n_symbols}: expected >= 1 and >= 2")
        if seq_len < n_copy:
            raise ValueError(f"task.seq_len={seq_len}: selective copy needs seq_len >= task.n_copy={n_copy}")
        self.n_copy, self.n_symbols = n_copy, n_symbols
        self.blank, self.marker = n_symbols, n_symbols + 1
        self.vocab_size = self.input_size = self.output_size = n_symbols + 2

    @property
    def total_len(self) -> int:
        return self.seq_len + self.n_copy

    def generate(self, batch_size: int, generator: torch.Generator, device: torch.device) -> TaskBatch:
        T, n = self.seq_len, self.n_copy
        scores = torch.rand(batch_size, T, generator=generator, device=device)
        positions = scores.topk(n, dim=1).indices.sort(dim=1).values  # n distinct sorted positions
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
        return metrics.get("accuracy", 0.0) >= 0.99
