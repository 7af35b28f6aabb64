"""Callback: activation derivatives of every probed layer, on probe steps.

Per layer L (see :mod:`rnnflow.probes.activations` for the definitions):

* ``activations/L/derivative_mean``: mean of ``φ'(a_t)`` over steps, samples and units;
* ``activations/L/saturated_fraction``: entries with ``φ' < threshold · max φ'``;
* ``activations/L/dead_fraction`` (ReLU): units never active on the probe batch (all its samples,
  whatever ``sequences``);

and the per-step profile ``mean_{b,j} φ'(a_{t,b,j})`` as the series ``derivative`` of the full-resolution
profile record ``activations/L/profile`` (:mod:`rnnflow.report.profiles`), kept for the last probe in
``profiles`` (drawn by :class:`rnnflow.callbacks.why.WhyItVanishes`).
"""

from __future__ import annotations

import numpy as np
import torch

from rnnflow.callbacks.probe_listener import LayerInstrument
from rnnflow.callbacks.trajectory import shared_trajectory
from rnnflow.probes.activations import (
    SATURATION_THRESHOLD,
    ActivationStats,
    activation_stats,
    merge_activation_stats,
)
from rnnflow.probes.gradient_flow import LayerBackward


class ActivationMonitor(LayerInstrument[ActivationStats]):
    """Args: ``enabled``; ``threshold`` ε of the saturated fraction; ``sequences``: use the first that
    many samples of the probe batch (None: all)."""

    group = "activations"
    labels = {"derivative": "mean φ'(a_t)"}

    def __init__(
        self, enabled: bool = True, threshold: float = SATURATION_THRESHOLD, sequences: int | None = None
    ) -> None:
        super().__init__(enabled, sequences)
        self.threshold = threshold
        self.profiles: dict[str, torch.Tensor] = {}  # last probe: (T,) mean φ' per step

    def measure(self, layer: LayerBackward) -> ActivationStats:
        # Dead units over the whole probe batch: "never active" on a few samples says little.
        stats = activation_stats(shared_trajectory(layer, self.sequences), self.threshold, layer.outputs)
        stats.derivative_profile = stats.derivative_profile.cpu()
        return stats

    def summarise(
        self, name: str, parts: list[ActivationStats]
    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        stats = merge_activation_stats(parts)
        prefix = f"activations/{name}"
        metrics = {
            f"{prefix}/derivative_mean": stats.derivative_mean,
            f"{prefix}/saturated_fraction": stats.saturated_fraction,
        }
        if stats.dead_fraction is not None:
            metrics[f"{prefix}/dead_fraction"] = stats.dead_fraction
        self.profiles[name] = stats.derivative_profile
        return metrics, {"derivative": stats.derivative_profile.numpy()}
