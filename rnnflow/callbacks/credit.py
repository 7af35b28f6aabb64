"""Callback: temporal credit assignment of every probed layer, on probe steps.

Per layer L (see :mod:`rnnflow.probes.credit`): ``grad_flow/L/early_share``, the share of the
recurrent weight gradient's per-step contributions ``C_t = ‖Σ_b δ_{t,b} h_{t−1,b}ᵀ‖_F`` that comes
from the first half of the sequence (not written when every ``C_t`` is exactly 0: no gradient
reached the layer); ``C`` ``(T,)`` as the series ``credit`` of the full-resolution profile record
``credit/L/profile`` (:mod:`rnnflow.report.profiles`), and in ``profiles`` for the last probe.
"""

from __future__ import annotations

import numpy as np
import torch

from rnnflow.callbacks.probe_listener import LayerInstrument
from rnnflow.callbacks.trajectory import shared_trajectory, sub_batch
from rnnflow.probes.credit import credit_profile, early_share
from rnnflow.probes.gradient_flow import LayerBackward


class CreditMonitor(LayerInstrument[torch.Tensor]):
    """Args: ``enabled``; ``sequences``: the first that many samples' share of the gradient (None: all)."""

    group = "credit"
    labels = {"credit": "‖Σ_b δ_t h_{t−1}ᵀ‖_F"}

    def __init__(self, enabled: bool = True, sequences: int | None = None) -> None:
        super().__init__(enabled, sequences)
        self.profiles: dict[str, torch.Tensor] = {}

    def measure(self, layer: LayerBackward) -> torch.Tensor:
        part = sub_batch(layer, self.sequences)
        trajectory = shared_trajectory(layer, self.sequences)
        return credit_profile(trajectory, part.hidden_grad, part.cell_grad).cpu()

    def summarise(
        self, name: str, parts: list[torch.Tensor]
    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        profile = torch.cat(parts)
        self.profiles[name] = profile
        share = early_share(profile)
        metrics = {} if share is None else {f"grad_flow/{name}/early_share": share}
        return metrics, {"credit": profile.numpy()}
