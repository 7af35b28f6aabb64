"""Callback: gate means and memory timescales of every probed LSTM/GRU layer, on probe steps.

Per layer L (see :mod:`rnnflow.probes.gates`):

* LSTM: ``gates/L/input_mean``, ``gates/L/forget_mean``, ``gates/L/output_mean`` and
  ``gates/L/forget_timescale`` (median over units of ``−1/ln f̄_j``, in steps);
* GRU: ``gates/L/reset_mean``, ``gates/L/update_mean`` and ``gates/L/update_timescale``.

RNN layers have no gates and are skipped.
"""

from __future__ import annotations

import lightning as L

from rnnflow.callbacks.logging import log_scalars
from rnnflow.callbacks.probe_listener import ProbeListener
from rnnflow.callbacks.trajectory import release, shared_trajectory
from rnnflow.probes.gates import GateStats, gate_stats, merge_gate_stats
from rnnflow.probes.gradient_flow import LayerBackward


class GateMonitor(ProbeListener):
    """Args: ``enabled``; ``sequences``: use the first that many samples of the probe batch (None: all)."""

    def __init__(self, enabled: bool = True, sequences: int | None = None) -> None:
        self.enabled = enabled
        self.sequences = sequences
        self._parts: dict[str, list[GateStats]] = {}
        self.latest: dict[str, GateStats] = {}
        self.last_scalars: dict[str, float] = {}

    def on_probe_layer(
        self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, layer: LayerBackward
    ) -> None:
        if not self.enabled or layer.spec.cell == "rnn":
            return
        stats = gate_stats(shared_trajectory(layer, self.sequences))
        stats.complement = stats.complement.cpu()
        self._parts.setdefault(layer.name, []).append(stats)

    def on_probe_end(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        release()
        if not self._parts:
            return
        metrics: dict[str, float] = {}
        for name, parts in self._parts.items():
            stats = merge_gate_stats(parts)
            for gate, mean in stats.means.items():
                metrics[f"gates/{name}/{gate}_mean"] = mean
            metrics[f"gates/{name}/{stats.memory_gate}_timescale"] = stats.timescale
            self.latest[name] = stats
        self._parts.clear()
        self.last_scalars = metrics
        log_scalars(trainer, metrics, step)
