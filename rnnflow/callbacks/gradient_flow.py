"""Callback: probe the exact gradient flow through time and write it to TensorBoard.

On probe steps (step 0, every ``every_n_steps``, and the last batch; see
:class:`rnnflow.callbacks.schedule.StepSchedule`) the module runs its layers through
:class:`rnnflow.probes.gradient_flow.GradientFlowProbe`; after backward this callback
turns the profiles ``n_t = ‖∂L/∂h_t‖_F`` into, per layer L:

* ``grad_flow/L/log10_ratio``, ``grad_flow/L/decay_rate``, ``grad_flow/L/horizon``
  (see :mod:`rnnflow.probes.profile_stats`),
* ``grad_flow/L/norm_tNNNN`` at ~8 log-spaced steps (one multiline custom-scalars chart
  per layer),
* LSTM: ``grad_flow/L/cell_log10_ratio``, ``grad_flow/L/cell_decay_rate``,
* the full profiles ``grad_flow/L/profile`` (hidden, and cell for an LSTM), one tensor summary
  per probe and layer (:mod:`rnnflow.report.profiles`),
* every ``figure_every_n_steps`` (and at the first and last probe): the image
  ``grad_flow/profile`` (all layers, with the ρ and α lines) and ``grad_flow/L/heatmap``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch

from rnnflow.callbacks.logging import batch_step, tensorboard_writer
from rnnflow.callbacks.schedule import StepSchedule
from rnnflow.probes.gradient_flow import GradientFlowProbe, LayerGradientFlow
from rnnflow.probes.profile_stats import decay_fit, decay_rate, horizon, log10_ratio, log_spaced_steps
from rnnflow.probes.spectral import gate_spectra
from rnnflow.report.figures import bin_profile, heatmap_figure, profile_figure
from rnnflow.report.profiles import write_profiles

HEATMAP_BINS = 200


def _loss_scale(trainer: L.Trainer) -> float:
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0


class GradientFlowMonitor(L.Callback):
    """Probe every ``every_n_steps`` steps; pictures every ``figure_every_n_steps``."""

    def __init__(
        self,
        every_n_steps: int | None = 100,
        figure_every_n_steps: int | None = 1000,
        horizon_factor: float = 1e-3,
        probe_route: str = "auto",
    ) -> None:
        self.every_n_steps = every_n_steps
        self.schedule = StepSchedule(every_n_steps)
        self.figure_every_n_steps = figure_every_n_steps
        self.horizon_factor = horizon_factor
        self.probe_route = probe_route
        self.heatmap_steps: list[int] = []
        self.heatmap_rows: list[list[np.ndarray]] = []
        self._figures_drawn = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard_writer(trainer)
        if writer is not None and self.every_n_steps is not None:
            layout = {
                "grad_flow": {
                    f"layer{i} ‖∂L/∂h_t‖ at log-spaced t": ["Multiline", [rf"grad_flow/layer{i}/norm_t\d+"]]
                    for i in range(pl_module.model.num_layers)
                }
            }
            writer.add_custom_scalars(layout)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._probe_step = batch_step(trainer)
        due = self.schedule.due(trainer, pl_module)
        pl_module.probe = GradientFlowProbe(route=self.probe_route) if due else None

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Once per backward (several per batch under truncated BPTT).
        if getattr(pl_module, "probe", None) is not None:
            pl_module.probe.collect(grad_scale=_loss_scale(trainer))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        probe = getattr(pl_module, "probe", None)
        pl_module.probe = None
        if probe is None:
            return
        flows = probe.gradient_flow()
        writer = tensorboard_writer(trainer)
        if writer is None or not flows:
            return
        step = self._probe_step
        profiles = [flow.hidden.cpu().double().numpy() for flow in flows]
        for index, (flow, profile) in enumerate(zip(flows, profiles, strict=True)):
            self._write_scalars(writer, f"grad_flow/layer{index}", flow, profile, step)
            series = {"hidden": profile}
            if flow.cell is not None:
                series["cell"] = flow.cell.double().cpu().numpy()
            write_profiles(writer, "grad_flow", f"layer{index}", step, series)
        self.heatmap_steps.append(step)
        self.heatmap_rows.append([bin_profile(p, HEATMAP_BINS) for p in profiles])
        if self._is_figure_step(trainer, pl_module, step):
            self._write_figures(writer, pl_module, profiles, step)

    def _write_scalars(
        self, writer: Any, prefix: str, flow: LayerGradientFlow, profile: np.ndarray, step: int
    ) -> None:
        hidden = flow.hidden.double().cpu()
        writer.add_scalar(f"{prefix}/log10_ratio", float(log10_ratio(hidden)), step)
        writer.add_scalar(f"{prefix}/decay_rate", float(decay_rate(hidden)), step)
        writer.add_scalar(f"{prefix}/horizon", horizon(hidden, self.horizon_factor), step)
        width = max(4, len(str(len(profile) - 1)))
        for t in log_spaced_steps(len(profile)):
            writer.add_scalar(f"{prefix}/norm_t{t:0{width}d}", float(profile[t]), step)
        if flow.cell is not None:
            cell = flow.cell.double().cpu()
            writer.add_scalar(f"{prefix}/cell_log10_ratio", float(log10_ratio(cell)), step)
            writer.add_scalar(f"{prefix}/cell_decay_rate", float(decay_rate(cell)), step)

    def _is_figure_step(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> bool:
        if self.figure_every_n_steps is None:
            return False
        first = len(self.heatmap_steps) == 1
        last = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        previous = self.heatmap_steps[-2] if len(self.heatmap_steps) > 1 else -1
        crossed = step // self.figure_every_n_steps > previous // self.figure_every_n_steps
        return first or last or crossed

    def _write_figures(
        self, writer: Any, pl_module: L.LightningModule, profiles: list[np.ndarray], step: int
    ) -> None:
        model = pl_module.model
        fits = [tuple(float(v) for v in decay_fit(torch.from_numpy(p))) for p in profiles]
        lines: dict[str, list[tuple[float, float] | None]] = {"α (fit)": fits}
        if model.cell == "rnn":  # the linear prediction ρ^(T-1-t) from the last step
            radii = [gate_spectra(layer.weight_hh_l0, ("h",))["h"][0] for layer in model.layers]
            lines = {"ρ(W_hh)": [(r, float(p[-1])) for r, p in zip(radii, profiles, strict=True)], **lines}
        figure = profile_figure(profiles, f"gradient profile at training step {step}", lines)
        writer.add_figure("grad_flow/profile", figure, step)
        for index in range(len(profiles)):
            rows = np.stack([row[index] for row in self.heatmap_rows])
            figure = heatmap_figure(self.heatmap_steps, rows, f"layer{index}: gradient reach over training")
            writer.add_figure(f"grad_flow/layer{index}/heatmap", figure, step)
        plt.close("all")

    def state_dict(self) -> dict[str, Any]:
        rows = [[r.tolist() for r in row] for row in self.heatmap_rows]
        return {"heatmap_steps": list(self.heatmap_steps), "heatmap_rows": rows, **self.schedule.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state_dict)
        self.heatmap_steps = list(state_dict.get("heatmap_steps", []))
        self.heatmap_rows = [[np.asarray(r) for r in row] for row in state_dict.get("heatmap_rows", [])]
