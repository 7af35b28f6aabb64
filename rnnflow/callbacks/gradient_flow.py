"""Callback: probe the exact gradient flow through time of any model's recurrent layers.

On probe steps (step 0, every ``every_n_steps``, and the last batch; see
:class:`rnnflow.callbacks.schedule.StepSchedule`) the recurrent modules of the LightningModule
(every ``nn.RNN``/``nn.LSTM``/``nn.GRU``, or the ``modules`` given) run through
:class:`rnnflow.probes.gradient_flow.GradientFlowProbe`; after backward this callback turns the
profiles ``n_t = ‖∂L/∂h_t‖_F`` into, per layer L (``layer0``, …; ``<module>/layer0`` in a model with
several recurrent modules; ``layer0_reverse`` for a backward direction):

* ``grad_flow/L/log10_ratio``, ``grad_flow/L/decay_rate``, ``grad_flow/L/horizon``,
  ``grad_flow/L/zero_steps`` (steps whose gradient is exactly 0; see
  :mod:`rnnflow.probes.profile_stats`),
* ``grad_flow/L/profile_log10/tNNNN``: ``log10 n_t`` at ~8 log-spaced steps t (log10 because the
  norms span tens of decades; no point where ``n_t`` is exactly 0, which the full profile records
  keep; the sub-prefix sorts these cards after the headline ``log10_ratio``). Custom scalars: a
  "headline" category first (the losses against the baseline, ``log10_ratio`` of every layer), then
  one multiline chart of these points per layer,
* LSTM: ``grad_flow/L/cell_log10_ratio``, ``grad_flow/L/cell_decay_rate``, ``grad_flow/L/cell_zero_steps``,
* the full profiles ``grad_flow/L/profile`` (hidden, and cell for an LSTM), one tensor summary
  per probe and layer (:mod:`rnnflow.report.profiles`),
* every ``figure_every_n_steps`` (and at the first and last probe): the image ``grad_flow/profile``
  (all layers, with the α line, for a vanilla RNN the γ‖W_hh‖₂ bound and the γρ(W_hh)
  linear-regime line, and the listeners' ``profile_lines``, e.g. the Lyapunov exponent's
  ``e^{λ₁}``) and ``grad_flow/L/heatmap``.

Scalars go through every logger of the trainer; images and layouts to TensorBoard only. Callbacks
that subclass :class:`rnnflow.callbacks.probe_listener.ProbeListener` receive each probed layer's
data on the same steps.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from rnnflow.callbacks.logging import batch_step, log_scalars, tensorboard_experiment
from rnnflow.callbacks.probe_listener import ProbeListener
from rnnflow.callbacks.schedule import StepSchedule, is_last_batch
from rnnflow.probes.gradient_flow import PROBE_ROUTES, GradientFlowProbe, LayerBackward, LayerGradientFlow
from rnnflow.probes.profile_stats import (
    decay_fit,
    decay_rate,
    horizon,
    log10_ratio,
    log_spaced_steps,
    recurrent_step_factors,
    zero_steps,
)
from rnnflow.probes.recurrent_modules import LayerKey, find_recurrent_modules, layer_spec, named_layers
from rnnflow.report.figures import bin_profile, heatmap_figure, profile_figure, theory_lines
from rnnflow.report.profiles import write_profiles

HEATMAP_BINS = 200


def _loss_scale(trainer: L.Trainer) -> float:
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0


class GradientFlowMonitor(L.Callback):
    """Probe every ``every_n_steps`` batches (None: off); pictures every ``figure_every_n_steps``.

    Args:
        every_n_steps: probe interval in training batches (and at batch 0 and the last batch).
        figure_every_n_steps: profile and heatmap images interval (None: no images).
        horizon_factor: ε of ``grad_flow/L/horizon``.
        probe_route: ``auto``, ``extra_input`` or ``adjoint``
            (:func:`rnnflow.probes.gradient_flow.choose_route`).
        modules: ``{name: module}`` to probe instead of every recurrent module of the LightningModule.
    """

    def __init__(
        self,
        every_n_steps: int | None = 100,
        figure_every_n_steps: int | None = 1000,
        horizon_factor: float = 1e-3,
        probe_route: str = "auto",
        modules: dict[str, nn.Module] | None = None,
    ) -> None:
        if probe_route not in PROBE_ROUTES:
            raise ValueError(f"probe_route={probe_route!r}: expected one of {', '.join(PROBE_ROUTES)}")
        self.every_n_steps = every_n_steps
        self.schedule = StepSchedule(every_n_steps)
        self.figure_every_n_steps = figure_every_n_steps
        self.horizon_factor = horizon_factor
        self.probe_route = probe_route
        self.modules = modules
        self.heatmap_steps: list[int] = []
        self.heatmap_rows: dict[str, list[np.ndarray]] = {}
        self._modules: dict[str, nn.Module] = {}
        self._layers: dict[str, tuple[nn.Module, LayerKey]] = {}
        self._probe: GradientFlowProbe | None = None
        self._attached: ExitStack | None = None
        self._probe_step = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        modules = self.modules or find_recurrent_modules(pl_module)
        if not modules and self.every_n_steps is not None:
            raise ValueError(
                f"GradientFlowMonitor: {type(pl_module).__name__} holds no nn.RNN, nn.LSTM or nn.GRU module"
            )
        self._modules = modules
        self._layers = named_layers(modules)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard_experiment(trainer)
        if writer is not None and self.every_n_steps is not None:
            layout = {
                "headline": {
                    "loss (train, val) and the trivial baseline": [
                        "Multiline",
                        [r"^train/loss$", r"^val/loss$", r"^val/baseline_loss$"],
                    ],
                    "log10 ‖∂L/∂h_0‖ / ‖∂L/∂h_(T-1)‖ per layer": [
                        "Multiline",
                        [r"^grad_flow/.*/log10_ratio$"],
                    ],
                },
                "grad_flow": {
                    f"{name}: log10 ‖∂L/∂h_t‖ at log-spaced t": [
                        "Multiline",
                        [rf"^grad_flow/{re.escape(name)}/profile_log10/t\d+$"],
                    ]
                    for name in self._layers
                },
            }
            writer.add_custom_scalars(layout)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not self.schedule.due(trainer, pl_module):
            return
        self._probe_step = step = batch_step(trainer)
        probe = GradientFlowProbe(route=self.probe_route)
        for callback in trainer.callbacks:
            if isinstance(callback, ProbeListener):
                probe.add_consumer(self._handing_over(callback, trainer, pl_module, step))
        self._attached = ExitStack()
        self._attached.enter_context(probe.attach(pl_module, self._modules, short_names=True))
        self._probe = probe

    @staticmethod
    def _handing_over(
        listener: ProbeListener, trainer: L.Trainer, pl_module: L.LightningModule, step: int
    ) -> Any:
        def consume(layer: LayerBackward) -> None:
            listener.on_probe_layer(trainer, pl_module, step, layer)

        return consume

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Once per backward (several per batch under truncated BPTT).
        if self._probe is not None:
            self._probe.collect(grad_scale=_loss_scale(trainer))

    def _detach(self) -> GradientFlowProbe | None:
        probe, self._probe = self._probe, None
        if self._attached is not None:
            self._attached.close()
            self._attached = None
        return probe

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._detach()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        probe = self._detach()
        if probe is None:
            return
        flows = probe.gradient_flow(grad_scale=_loss_scale(trainer))
        step = self._probe_step
        for callback in trainer.callbacks:
            if isinstance(callback, ProbeListener):
                callback.on_probe_end(trainer, pl_module, step)
        if trainer.global_rank != 0 or not flows:
            return
        profiles = {name: flow.hidden.cpu().double().numpy() for name, flow in flows.items()}
        metrics: dict[str, float] = {}
        for name, flow in flows.items():
            metrics.update(self._scalars(f"grad_flow/{name}", flow, profiles[name]))
        log_scalars(trainer, metrics, step)
        self.heatmap_steps.append(step)
        for name, profile in profiles.items():
            self.heatmap_rows.setdefault(name, []).append(bin_profile(profile, HEATMAP_BINS))
        writer = tensorboard_experiment(trainer)
        if writer is None:
            return
        for name, flow in flows.items():
            series = {"hidden": profiles[name]}
            if flow.cell is not None:
                series["cell"] = flow.cell.double().cpu().numpy()
            write_profiles(writer, "grad_flow", name, step, series)
        if self._is_figure_step(trainer, pl_module, step):
            predicted: dict[str, dict[str, float]] = {}
            for callback in trainer.callbacks:
                if isinstance(callback, ProbeListener):
                    predicted.update(callback.profile_lines())
            self._write_figures(writer, profiles, step, predicted)

    def _scalars(self, prefix: str, flow: LayerGradientFlow, profile: np.ndarray) -> dict[str, float]:
        hidden = flow.hidden.double().cpu()
        metrics = {
            f"{prefix}/log10_ratio": float(log10_ratio(hidden)),
            f"{prefix}/decay_rate": float(decay_rate(hidden)),
            f"{prefix}/horizon": float(horizon(hidden, self.horizon_factor)),
            f"{prefix}/zero_steps": float(zero_steps(hidden)),
        }
        width = max(4, len(str(len(profile) - 1)))
        for t in log_spaced_steps(len(profile)):
            if 0 < profile[t] < np.inf:  # log10 of an exact 0 would be -inf: the profile record has it
                metrics[f"{prefix}/profile_log10/t{t:0{width}d}"] = float(np.log10(profile[t]))
        if flow.cell is not None:
            cell = flow.cell.double().cpu()
            metrics[f"{prefix}/cell_log10_ratio"] = float(log10_ratio(cell))
            metrics[f"{prefix}/cell_decay_rate"] = float(decay_rate(cell))
            metrics[f"{prefix}/cell_zero_steps"] = float(zero_steps(cell))
        return metrics

    def _is_figure_step(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> bool:
        if self.figure_every_n_steps is None:
            return False
        first = len(self.heatmap_steps) == 1
        previous = self.heatmap_steps[-2] if len(self.heatmap_steps) > 1 else -1
        crossed = step // self.figure_every_n_steps > previous // self.figure_every_n_steps
        return first or crossed or is_last_batch(trainer, pl_module, started=False)

    def _write_figures(
        self,
        writer: Any,
        profiles: dict[str, np.ndarray],
        step: int,
        predicted: dict[str, dict[str, float]] | None = None,
    ) -> None:
        names = list(profiles)
        fits = [tuple(float(v) for v in decay_fit(torch.from_numpy(profiles[n]))) for n in names]
        factors = []
        for name in names:
            module, key = self._layers.get(name, (None, None))
            factors.append(
                None if module is None else recurrent_step_factors(layer_spec(module, key.layer, key.reverse))
            )
        lines = theory_lines([profiles[n] for n in names], fits, factors)
        for label, rates in (predicted or {}).items():  # listeners' lines (e.g. e^λ₁), from the last step
            lines[label] = [(rates[n], float(profiles[n][-1])) if n in rates else None for n in names]
        figure = profile_figure(
            [profiles[n] for n in names], f"gradient profile at training step {step}", lines, names
        )
        writer.add_figure("grad_flow/profile", figure, step)
        for name in names:
            rows = self.heatmap_rows.get(name, [])
            if len(rows) != len(self.heatmap_steps):
                continue  # a layer that was not probed at every step (its module unused on some batches)
            title = f"{name}: gradient reach over training"
            figure = heatmap_figure(self.heatmap_steps, np.stack(rows), title)
            writer.add_figure(f"grad_flow/{name}/heatmap", figure, step)
        plt.close("all")

    def state_dict(self) -> dict[str, Any]:
        rows = {name: [r.tolist() for r in rows] for name, rows in self.heatmap_rows.items()}
        return {"heatmap_steps": list(self.heatmap_steps), "heatmap_rows": rows, **self.schedule.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state_dict)
        self.heatmap_steps = list(state_dict.get("heatmap_steps", []))
        rows = state_dict.get("heatmap_rows", {})
        if isinstance(rows, list):  # checkpoints before named layers: one list of per-layer rows per step
            rows = {f"layer{i}": [row[i] for row in rows] for i in range(len(rows[0]) if rows else 0)}
        self.heatmap_rows = {name: [np.asarray(r) for r in layer] for name, layer in rows.items()}
