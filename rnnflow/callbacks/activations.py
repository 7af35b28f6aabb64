"""Callback: activation derivatives of every probed layer, on probe steps.

Per layer L (see :mod:`rnnflow.probes.activations` for the definitions):

* ``activations/L/derivative_mean``: mean of ``φ'(a_t)`` over steps, samples and units;
* ``activations/L/saturated_fraction``: entries with ``φ' < threshold · max φ'``;
* ``activations/L/dead_fraction`` (ReLU): units never active on the probe batch;

and the per-step profile ``mean_{b,j} φ'(a_{t,b,j})`` as the series ``derivative`` of the full-resolution
profile record ``activations/L/profile`` (:mod:`rnnflow.report.profiles`), kept for the last probe in
``profiles`` (drawn by :class:`rnnflow.callbacks.why.WhyItVanishes`).
"""

from __future__ import annotations

import lightning as L
import torch

from rnnflow.callbacks.logging import log_scalars, tensorboard_experiment
from rnnflow.callbacks.probe_listener import ProbeListener
from rnnflow.callbacks.trajectory import release, shared_trajectory
from rnnflow.probes.activations import (
    SATURATION_THRESHOLD,
    ActivationStats,
    activation_stats,
    merge_activation_stats,
)
from rnnflow.probes.gradient_flow import LayerBackward
from rnnflow.report.profiles import write_profiles


class ActivationMonitor(ProbeListener):
    """Args: ``enabled``; ``threshold`` ε of the saturated fraction; ``sequences``: use the first that
    many samples of the probe batch (None: all)."""

    def __init__(
        self, enabled: bool = True, threshold: float = SATURATION_THRESHOLD, sequences: int | None = None
    ) -> None:
        self.enabled = enabled
        self.threshold = threshold
        self.sequences = sequences
        self._parts: dict[str, list[ActivationStats]] = {}
        self.profiles: dict[str, torch.Tensor] = {}  # last probe: (T,) mean φ' per step
        self.last_scalars: dict[str, float] = {}

    def on_probe_layer(
        self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, layer: LayerBackward
    ) -> None:
        if not self.enabled:
            return
        stats = activation_stats(shared_trajectory(layer, self.sequences), self.threshold)
        stats.derivative_profile = stats.derivative_profile.cpu()
        self._parts.setdefault(layer.name, []).append(stats)

    def on_probe_end(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        release()
        if not self._parts:
            return
        metrics: dict[str, float] = {}
        for name, parts in self._parts.items():
            stats = merge_activation_stats(parts)
            prefix = f"activations/{name}"
            metrics[f"{prefix}/derivative_mean"] = stats.derivative_mean
            metrics[f"{prefix}/saturated_fraction"] = stats.saturated_fraction
            if stats.dead_fraction is not None:
                metrics[f"{prefix}/dead_fraction"] = stats.dead_fraction
            self.profiles[name] = stats.derivative_profile
        self._parts.clear()
        self.last_scalars = metrics
        log_scalars(trainer, metrics, step)
        writer = tensorboard_experiment(trainer)
        if writer is not None:
            labels = {"derivative": "mean φ'(a_t)"}
            for name, profile in self.profiles.items():
                write_profiles(writer, "activations", name, step, {"derivative": profile.numpy()}, labels)
