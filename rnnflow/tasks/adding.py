"""The adding problem (Hochreiter & Schmidhuber 1997, §5.4), in three variants.

Encoding and marker layouts: :mod:`rnnflow.tasks.marked` (``task.variant``: ``standard``,
``pascanu``, ``hochreiter``); ``v_1``, ``v_2`` are the two marked values. Loss: MSE of the read-out
at the last step. Trivial baseline: always predict ``E[y]``; its MSE is ``Var(y)``, with
``Var(v) = (high - low)²/12`` for ``v ~ U[low, high]``.

* ``standard`` (Arjovsky et al. 2016; length T, ``v ~ U[0, 1]``): ``y = v_1 + v_2``; baseline
  predict 1, MSE ``2 · 1/12 = 1/6 ≈ 0.1667``. Solved when MSE < 0.01 (6% of the baseline): the
  threshold of H&S 1997's stopping rule (average training error below 0.01), which they apply to
  their target scaled to ``[0, 1]``.
* ``pascanu`` (Pascanu et al. 2013's generator; length ``T … 1.1 T``, ``v ~ U[0, 1]``):
  ``y = (v_1 + v_2)/2``, the *mean*; baseline predict ½, MSE ``(1/4) · 2/12 = 1/24 ≈ 0.0417``.
  A sequence is correct when its squared error is at most 0.04 (``|ŷ - y| < 0.2``), as in their
  code; solved when accuracy ≥ 0.99.
* ``hochreiter`` (the original; length ``T … 1.1 T``, ``v ~ U[-1, 1]``):
  ``y = 0.5 + (v_1 + v_2)/4``, the sum scaled to ``[0, 1]``; baseline predict ½, MSE
  ``(1/16) · 2 · 4/12 = 1/24``. A sequence is "processed correctly if the absolute error at the
  sequence end is below 0.04"; solved when accuracy ≥ 0.99.
"""

from __future__ import annotations

import torch

from rnnflow.tasks.marked import MarkedValueTask

BASELINE_MSE = {"standard": 1.0 / 6.0, "pascanu": 1.0 / 24.0, "hochreiter": 1.0 / 24.0}


class AddingTask(MarkedValueTask):
    name = "adding"
    standard_threshold = 0.01

    def value_range(self) -> tuple[float, float]:
        return (-1.0, 1.0) if self.variant == "hochreiter" else (0.0, 1.0)

    def target(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        total = first + second
        if self.variant == "pascanu":
            return total / 2
        if self.variant == "hochreiter":
            return 0.5 + total / 4
        return total

    def baseline_loss(self) -> float:
        return BASELINE_MSE[self.variant]
