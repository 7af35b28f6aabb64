"""The multiplication problem (Hochreiter & Schmidhuber 1997, §5.5; Martens & Sutskever 2011;
Pascanu et al. 2013), in the three layouts of :mod:`rnnflow.tasks.marked` (``task.variant``).

Values ``v_t ~ U[0, 1]`` in every variant; target the product ``y = v_1 · v_2`` of the two marked
values, read out at the last step; loss MSE.

Trivial baseline: predict ``E[y] = E[v]² = 1/4``; its MSE is
``Var(v_1 v_2) = E[v²]² - E[v]⁴ = 1/9 - 1/16 = 7/144 ≈ 0.0486`` (every variant).

Solved:

* ``standard``: MSE < 0.003, the same ≈6% of the baseline as the adding problem's 0.01 (the
  fixed-length multiplication problem has no criterion of its own in the literature);
* ``pascanu``: accuracy ≥ 0.99 with a sequence correct when ``|ŷ - y| < 0.2`` (Pascanu's code:
  squared error at most 0.04);
* ``hochreiter``: accuracy ≥ 0.99 with a sequence correct when ``|ŷ - y| < 0.04`` (the absolute-error
  tolerance of H&S's adding problem).
"""

from __future__ import annotations

import torch

from rnnflow.tasks.marked import MarkedValueTask


class MultiplicationTask(MarkedValueTask):
    name = "multiplication"
    standard_threshold = 0.003

    def value_range(self) -> tuple[float, float]:
        return (0.0, 1.0)

    def target(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return first * second

    def baseline_loss(self) -> float:
        return 7.0 / 144.0
