"""Callback: Lyapunov exponents of every probed layer along the probe batch's trajectory.

Per layer L (see :mod:`rnnflow.probes.lyapunov`): ``dynamics/L/lyapunov_max``, the top exponent
λ₁ averaged over the first ``sequences`` samples of the probe batch, and with ``count`` = k > 1
also ``dynamics/L/lyapunov_K`` for K = 2 … k. Over a long sequence ``ln α ≈ λ₁``, where α is
``grad_flow/L/decay_rate``; ``exponents`` keeps the last probe's λ's for the profile picture.

Under truncated BPTT each chunk is iterated on its own and the chunks' exponents are averaged
weighted by their length (the tangent vectors restart at every chunk).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from rnnflow.callbacks.probe_listener import LayerInstrument
from rnnflow.callbacks.trajectory import shared_trajectory
from rnnflow.probes.gradient_flow import LayerBackward
from rnnflow.probes.lyapunov import lyapunov_exponents

log = logging.getLogger(__name__)


class LyapunovMonitor(LayerInstrument[tuple[int, torch.Tensor]]):
    """Args: ``enabled``; ``count`` k of exponents; ``sequences`` samples used; ``qr_every`` steps
    between re-orthonormalisations; ``segment`` steps per segment iterated side by side (None: one
    sequential pass; see :func:`rnnflow.probes.lyapunov.lyapunov_exponents`)."""

    def __init__(
        self,
        enabled: bool = True,
        count: int = 1,
        sequences: int = 1,
        qr_every: int = 10,
        segment: int | None = 128,
    ) -> None:
        super().__init__(enabled, sequences)
        self.count = count
        self.qr_every = qr_every
        self.segment = segment
        self.exponents: dict[str, torch.Tensor] = {}  # last probe: (k,) per layer
        self._warned: set[str] = set()

    def measure(self, layer: LayerBackward) -> tuple[int, torch.Tensor]:
        trajectory = shared_trajectory(layer, self.sequences)
        dim = layer.spec.hidden_size * (2 if layer.spec.cell == "lstm" else 1)
        exponents = lyapunov_exponents(trajectory, min(self.count, dim), self.qr_every, segment=self.segment)
        return trajectory.steps, exponents.mean(dim=0).cpu()

    def summarise(
        self, name: str, parts: list[tuple[int, torch.Tensor]]
    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        total = sum(steps for steps, _ in parts)
        exponents = sum(values * (steps / total) for steps, values in parts)
        self.exponents[name] = exponents
        metrics = {f"dynamics/{name}/lyapunov_max": float(exponents[0])}
        for index in range(1, exponents.numel()):
            metrics[f"dynamics/{name}/lyapunov_{index + 1}"] = float(exponents[index])
        if math.isinf(float(exponents[0])) and name not in self._warned:
            self._warned.add(name)
            log.warning(
                "%s: every tangent direction was mapped exactly to 0 at some step (e.g. all ReLU "
                "units off): lyapunov_max = -inf, the exact value",
                name,
            )
        return metrics, {}

    def profile_lines(self) -> dict[str, dict[str, float]]:
        """``e^{λ₁}`` per layer: the per-step factor the forward dynamics predict for ‖∂L/∂h_t‖."""
        if not self.enabled:
            return {}
        return {"e^λ₁ (Lyapunov)": {name: math.exp(float(e[0])) for name, e in self.exponents.items()}}
