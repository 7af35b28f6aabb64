"""Callback: the verdict of a run, one line per layer, at the end of training (console and log).

It keeps the last probe step's evidence: ``log10_ratio`` and ``decay_rate`` of each layer's
gradient profile (computed here from the probe's ``∂L/∂h_t``, scaled so that vanishing norms do
not underflow), the ``last_scalars`` of every other instrument callback of the trainer (activations,
gates, Lyapunov, credit, parameter gradients) and ``val/loss`` against ``val/baseline_loss``; the
rules are :data:`rnnflow.report.verdict.RULES`. ``lines`` holds the verdict after training, and
:func:`rnnflow.report.verdict.verdict_lines` computes it from any ``{tag: value}``.

The lines also go to every TensorBoard logger of the trainer as the text summary ``verdict``
(TensorBoard's Text tab, at the last step), so that the run's story and its verdict sit together.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from rnnflow.callbacks.probe_listener import ProbeListener
from rnnflow.models.fused import FusedSpec
from rnnflow.probes.gradient_flow import LayerBackward
from rnnflow.probes.profile_stats import decay_rate, log10_ratio
from rnnflow.report.verdict import verdict_lines, verdict_markdown

log = logging.getLogger(__name__)


def nonlinearity_of(spec: FusedSpec) -> str | None:
    """``tanh``, ``relu`` or ``sigmoid`` for an RNN layer (None for gated cells)."""
    if spec.cell != "rnn":
        return None
    if spec.kernel == "rnn_relu":
        return "relu"
    return "tanh" if spec.out_scale == 1.0 else "sigmoid"


class VerdictMonitor(ProbeListener):
    """Args: ``enabled``."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._profiles: dict[str, list[torch.Tensor]] = {}
        self.kinds: dict[str, tuple[str, str | None]] = {}
        self.scalars: dict[str, float] = {}
        self.lines: list[str] = []

    def on_probe_layer(
        self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, layer: LayerBackward
    ) -> None:
        if not self.enabled:
            return
        self._profiles.setdefault(layer.name, []).append(layer.hidden_profile().cpu())
        self.kinds[layer.name] = (layer.spec.cell, nonlinearity_of(layer.spec))

    def on_probe_end(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        if not self._profiles:
            return
        scalars: dict[str, float] = {}
        for name, parts in self._profiles.items():
            profile = torch.cat(parts)
            scalars[f"grad_flow/{name}/log10_ratio"] = float(log10_ratio(profile))
            scalars[f"grad_flow/{name}/decay_rate"] = float(decay_rate(profile))
            scalars[f"seq_len/{name}"] = float(profile.numel())
        self._profiles.clear()
        for callback in trainer.callbacks:
            if callback is not self:
                scalars.update(getattr(callback, "last_scalars", {}))
        self.scalars = scalars

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or not self.scalars or trainer.global_rank != 0:
            return
        scalars: dict[str, Any] = dict(self.scalars)
        for key in ("val/loss", "val/baseline_loss"):
            if key in trainer.callback_metrics:
                scalars[key] = float(trainer.callback_metrics[key])
        lengths = [v for k, v in scalars.items() if k.startswith("seq_len/")]
        first = next(iter(self.kinds.values()), ("rnn", None))
        self.lines = verdict_lines(
            {k: v for k, v in scalars.items() if not k.startswith("seq_len/")},
            cell=first[0],
            nonlinearity=first[1],
            seq_len=int(max(lengths)) if lengths else None,
            layer_kinds=self.kinds,
            # rnnflow's module keeps the run's config as flat hparams; another model's, if any,
            # only hide a remedy whose key=value they hold.
            settings=dict(pl_module.hparams),
        )
        log.info("verdict (rules: rnnflow.report.verdict.RULES):\n  %s", "\n  ".join(self.lines))
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("verdict", verdict_markdown(self.lines), trainer.global_step)
