"""The adding problem (Hochreiter & Schmidhuber 1997), in two forms.

Encoding: each step carries two features, a value ``v_t ~ U[0, 1]`` and a marker
``m_t ∈ {0, 1}``; exactly two markers are set.

* ``variant: standard`` (Le et al. 2015; Arjovsky et al. 2016): length T, one marker
  uniformly in the first half ``[0, ⌊T/2⌋)`` and one in the second half ``[⌊T/2⌋, T)``.
* ``variant: pascanu`` (Martens & Sutskever 2011, used by Pascanu et al. 2013): a length
  ``T' ~ U{T, …, ⌊1.1 T⌋}`` per sequence, the first marker in ``[0, ⌊T'/10⌋)``, the second in
  ``[⌊T'/10⌋, ⌊T'/2⌋)``. Sequences are left-padded with zero steps (value 0, marker 0) to
  ``⌊1.1 T⌋``, so the read-out at the last step is every sequence's own end.

Target: ``y = Σ_t m_t v_t`` (the sum of the two marked values), read out at the last step.

Loss: mean squared error. Trivial baseline: always predict ``E[y] = 1``, whose MSE is
``Var(v_1 + v_2) = 2 · 1/12 = 1/6 ≈ 0.1667``. Solved: MSE < 0.01 (6% of the baseline; the
threshold commonly used since Hochreiter & Schmidhuber's 0.04 absolute-error criterion).

Shapes: inputs ``(B, T_total, 2)``, targets ``(B,)``, model output ``(B, 1)``.
"""

from __future__ import annotations

import torch

from rnnflow.tasks.base import SyntheticTask, TaskBatch, uniform_int


class AddingTask(SyntheticTask):
    name = "adding"
    input_size = 2
    output_size = 1
    readout = "last"

    variants = ("standard", "pascanu")

    def __init__(self, seq_len: int, variant: str = "standard") -> None:
        super().__init__(seq_len)
        if variant not in self.variants:
            raise ValueError(f"task.variant={variant!r}: expected one of {', '.join(self.variants)}")
        minimum = 2 if variant == "standard" else 10
        if seq_len < minimum:
            raise ValueError(
                f"task.seq_len={seq_len}: the {variant} adding problem needs seq_len >= {minimum}"
            )
        self.variant = variant

    @property
    def total_len(self) -> int:
        return self.seq_len if self.variant == "standard" else int(1.1 * self.seq_len)

    def _marker_positions(
        self, batch_size: int, generator: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(first, second, start)`` per sequence; ``start`` is where the unpadded sequence begins."""
        total = self.total_len
        if self.variant == "standard":
            half = total // 2
            first = uniform_int(0, half, batch_size, generator, device)
            second = uniform_int(half, total, batch_size, generator, device)
            return first, second, torch.zeros_like(first)
        lengths = uniform_int(self.seq_len, total + 1, batch_size, generator, device)
        start = total - lengths
        first = start + (torch.rand(batch_size, generator=generator, device=device) * (lengths // 10)).long()
        span = lengths // 2 - lengths // 10
        second = (
            start + lengths // 10 + (torch.rand(batch_size, generator=generator, device=device) * span).long()
        )
        return first, second, start

    def generate(self, batch_size: int, generator: torch.Generator, device: torch.device) -> TaskBatch:
        total = self.total_len
        values = torch.rand(batch_size, total, generator=generator, device=device)
        first, second, start = self._marker_positions(batch_size, generator, device)
        values = values * (torch.arange(total, device=device) >= start[:, None])  # zero padding
        markers = torch.zeros(batch_size, total, device=device)
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

    def solved(self, val_loss: float, metrics: dict[str, float]) -> bool:
        return val_loss < 0.01
