"""The adding problem (Hochreiter & Schmidhuber 1997; the form of Le et al. 2015).

Encoding: each step carries two features, a value ``v_t ~ U[0, 1]`` and a marker
``m_t ∈ {0, 1}``. Exactly two markers are set: one at a uniformly drawn step in the
first half ``[0, ⌊T/2⌋)`` and one in the second half ``[⌊T/2⌋, T)``.

Target: ``y = Σ_t m_t v_t`` (the sum of the two marked values), read out at the last step.

Loss: mean squared error. Trivial baseline: always predict ``E[y] = 1``, whose MSE is
``Var(v_1 + v_2) = 2 · 1/12 = 1/6 ≈ 0.1667``.

Shapes: inputs ``(B, T, 2)``, targets ``(B,)``, model output ``(B, 1)``.
"""

from __future__ import annotations

import torch

from rnnflow.tasks.base import SyntheticTask, TaskBatch


class AddingTask(SyntheticTask):
    name = "adding"
    input_size = 2
    output_size = 1
    readout = "last"

    def __init__(self, seq_len: int) -> None:
        super().__init__(seq_len)
        if seq_len < 2:
            raise ValueError(f"task.seq_len={seq_len}: the adding problem needs seq_len >= 2 (one marker per half)")

    def generate(self, batch_size: int, generator: torch.Generator, device: torch.device) -> TaskBatch:
        T = self.seq_len
        half = T // 2
        values = torch.rand(batch_size, T, generator=generator, device=device)
        first = torch.randint(0, half, (batch_size,), generator=generator, device=device)
        second = torch.randint(half, T, (batch_size,), generator=generator, device=device)
        markers = torch.zeros(batch_size, T, device=device)
        rows = torch.arange(batch_size, device=device)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        inputs = torch.stack([values, markers], dim=-1)
        targets = (values * markers).sum(dim=1)
        return TaskBatch(inputs, targets)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(outputs.squeeze(-1), targets)

    def baseline_loss(self) -> float:
        return 1.0 / 6.0
