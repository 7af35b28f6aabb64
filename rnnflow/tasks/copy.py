"""Copy memory (Hochreiter & Schmidhuber 1997; the form of Arjovsky et al. 2016).

Alphabet: symbols ``0..7`` (data), ``8`` (blank), ``9`` (marker); ``vocab_size = 10``.

Input, length ``T + 20``: 10 data symbols drawn uniformly from ``0..7``, then ``T - 1``
blanks, the marker, then 10 blanks. Here ``T = seq_len`` is the delay between the end of
the data and the start of recall.

Target, length ``T + 20``: blanks for the first ``T + 10`` steps, then the 10 data symbols.

Loss: cross-entropy over all ``T + 20`` steps. Trivial baseline: a memoryless predictor
outputs blank for the first ``T + 10`` steps (loss 0) and the uniform distribution over
the 8 symbols for the last 10, giving ``10 · ln 8 / (T + 20)``.

Metric ``accuracy``: the fraction of the 10 recalled symbols predicted correctly. Solved when
``accuracy ≥ 0.99`` (Arjovsky et al. report the cross-entropy only; a model whose loss merely drops
below the baseline may still recall few symbols, so the criterion is on the recall itself).

Shapes: inputs ``(B, T + 20)`` long, targets ``(B, T + 20)`` long, output ``(B, T + 20, 10)``.
"""

from __future__ import annotations

import math

import torch

from rnnflow.tasks.base import SOLVED_ACCURACY, SyntheticTask, TaskBatch

N_SYMBOLS = 8
BLANK = 8
MARKER = 9
N_RECALL = 10


class CopyTask(SyntheticTask):
    name = "copy"
    vocab_size = 10
    input_size = 10
    output_size = 10
    readout = "all"
    has_accuracy = True
    criterion = f"accuracy >= {SOLVED_ACCURACY} on the recalled symbols"

    @property
    def total_len(self) -> int:
        return self.seq_len + 2 * N_RECALL

    def generate(self, batch_size: int, generator: torch.Generator, device: torch.device) -> TaskBatch:
        T = self.seq_len
        data = torch.randint(0, N_SYMBOLS, (batch_size, N_RECALL), generator=generator, device=device)
        inputs = torch.full((batch_size, self.total_len), BLANK, dtype=torch.long, device=device)
        inputs[:, :N_RECALL] = data
        inputs[:, N_RECALL + T - 1] = MARKER
        targets = torch.full_like(inputs, BLANK)
        targets[:, -N_RECALL:] = data
        return TaskBatch(inputs, targets)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(outputs.flatten(0, 1), targets.flatten())

    def baseline_loss(self) -> float:
        return N_RECALL * math.log(N_SYMBOLS) / self.total_len

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        recalled = outputs[:, -N_RECALL:].argmax(dim=-1)
        return {"accuracy": (recalled == targets[:, -N_RECALL:]).float().mean()}

    def solved(self, val_loss: float, metrics: dict[str, float]) -> bool:
        return metrics.get("accuracy", 0.0) >= SOLVED_ACCURACY
