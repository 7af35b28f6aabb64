"""Callback: temporal credit assignment of every probed layer, on probe steps.

Per layer L (see :mod:`rnnflow.probes.credit`): ``grad_flow/L/early_share``, the share of the
recurrent weight gradient's per-step contributions ``C_t = ‖Σ_b δ_{t,b} h_{t−1,b}ᵀ‖_F`` that comes
from the first half of the sequence (not written when every ``C_t`` is exactly 0: no gradient
reached the layer); ``C`` ``(T,)`` as the series ``credit`` of the full-resolution profile record
``credit/L/profile`` (:mod:`rnnflow.report.profiles`), and in ``profiles`` for the last probe.
"""

from __future__ import annotations

import lightning as L
import torch

from rnnflow.callbacks.logging import log_scalars, tensorboard_experiment
from rnnflow.callbacks.probe_listener import ProbeListener
from rnnflow.callbacks.trajectory import release, shared_trajectory, sub_batch
from rnnflow.probes.credit import credit_profile, early_share
from rnnflow.probes.gradient_flow import LayerBackward
from rnnflow.report.profiles import write_profiles


class CreditMonitor(ProbeListener):
    """Args: ``enabled``; ``sequences``: the first that many samples' share of the gradient (None: all)."""

    def __init__(self, enabled: bool = True, sequences: int | None = None) -> None:
        self.enabled = enabled
        self.sequences = sequences
        self._parts: dict[str, list[torch.Tensor]] = {}
        self.profiles: dict[str, torch.Tensor] = {}
        self.last_scalars: dict[str, float] = {}

    def on_probe_layer(
        self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, layer: LayerBackward
    ) -> None:
        if not self.enabled:
            return
        part = sub_batch(layer, self.sequences)
        trajectory = shared_trajectory(layer, self.sequences)
        profile = credit_profile(trajectory, part.hidden_grad, part.cell_grad)
        self._parts.setdefault(layer.name, []).append(profile.cpu())

    def on_probe_end(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        release()
        if not self._parts:
            return
        metrics: dict[str, float] = {}
        for name, parts in self._parts.items():
            profile = torch.cat(parts)
            self.profiles[name] = profile
            share = early_share(profile)
            if share is not None:
                metrics[f"grad_flow/{name}/early_share"] = share
        self._parts.clear()
        self.last_scalars = metrics
        log_scalars(trainer, metrics, step)
        writer = tensorboard_experiment(trainer)
        if writer is not None:
            labels = {"credit": "‖Σ_b δ_t h_{t−1}ᵀ‖_F"}
            for name, profile in self.profiles.items():
                write_profiles(writer, "credit", name, step, {"credit": profile.numpy()}, labels)
