"""Callback: gate means and memory timescales of every probed LSTM/GRU layer, on probe steps.

Per layer L (see :mod:`rnnflow.probes.gates`):

* LSTM: ``gates/L/input_mean``, ``gates/L/forget_mean``, ``gates/L/output_mean`` and
  ``gates/L/forget_timescale`` (median over units of ``−1/ln f̄_j``, in steps);
* GRU: ``gates/L/reset_mean``, ``gates/L/update_mean`` and ``gates/L/update_timescale``.

RNN layers have no gates and are skipped.
"""

from __future__ import annotations

import numpy as np

from rnnflow.callbacks.probe_listener import LayerInstrument
from rnnflow.callbacks.trajectory import shared_trajectory
from rnnflow.probes.gates import GateStats, gate_stats, merge_gate_stats
from rnnflow.probes.gradient_flow import LayerBackward


class GateMonitor(LayerInstrument[GateStats]):
    """Args: ``enabled``; ``sequences``: use the first that many samples of the probe batch (None: all)."""

    def __init__(self, enabled: bool = True, sequences: int | None = None) -> None:
        super().__init__(enabled, sequences)
        self.latest: dict[str, GateStats] = {}

    def measure(self, layer: LayerBackward) -> GateStats | None:
        if layer.spec.cell == "rnn":
            return None
        stats = gate_stats(shared_trajectory(layer, self.sequences))
        stats.complement = stats.complement.cpu()
        return stats

    def summarise(self, name: str, parts: list[GateStats]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        stats = merge_gate_stats(parts)
        metrics = {f"gates/{name}/{gate}_mean": mean for gate, mean in stats.means.items()}
        metrics[f"gates/{name}/{stats.memory_gate}_timescale"] = stats.timescale
        self.latest[name] = stats
        return metrics, {}
