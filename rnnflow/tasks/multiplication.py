"""The multiplication problem (Hochreiter & Schmidhuber 1997; Martens & Sutskever 2011).

Encoding and marker placement as the adding problem (:mod:`rnnflow.tasks.adding`, both
variants); the target is the *product* ``y = v_1 · v_2`` of the two marked values.

Loss: MSE. Trivial baseline: predict ``E[y] = 1/4``; its MSE is
``Var(v_1 v_2) = E[v_1²] E[v_2²] - 1/16 = 1/9 - 1/16 = 7/144 ≈ 0.0486``.
Solved: MSE < 0.003 (the same 6% of the baseline as the adding problem's 0.01).
"""

from __future__ import annotations

import torch

from rnnflow.tasks.adding import AddingTask
from rnnflow.tasks.base import TaskBatch


class MultiplicationTask(AddingTask):
    name = "multiplication"

    def generate(self, batch_size: int, generator: torch.Generator, device: torch.device) -> TaskBatch:
        batch = super().generate(batch_size, generator, device)
        values, markers = batch.inputs.unbind(-1)
        marked = torch.where(markers > 0, values, torch.ones_like(values))
        return TaskBatch(batch.inputs, marked.prod(dim=1))

    def baseline_loss(self) -> float:
        return 7.0 / 144.0

    def solved(self, val_loss: float, metrics: dict[str, float]) -> bool:
        return val_loss < 0.003
