"""Callback: the "why it vanishes" picture of every probed layer, next to the gradient profile.

Every ``figure_every_n_steps`` (and at the first and last probe) writes the TensorBoard image
``why/L`` per layer L, three panels over the time step t of the probe batch:

1. ``log10 ‖∂L/∂h_t‖`` with two straight lines from the last step: the fitted per-step factor α and
   the Lyapunov prediction ``e^{λ₁}`` per step (λ₁ from :class:`LyapunovMonitor`); LSTM: also
   ``‖∂L/∂c_t‖`` and the forget-gate timescale τ (:class:`GateMonitor`);
2. the mean activation derivative ``mean_{b,j} φ'(a_{t,b,j})`` (:class:`ActivationMonitor`): where the
   chain is cut;
3. ``log10 C_t``, the per-step contribution to ``∂L/∂W_hh`` (:class:`CreditMonitor`), with the early share.

The panels of instruments that are switched off are left out. Reads the other callbacks' last results
(``exponents``, ``profiles``, ``latest``) at ``on_probe_end``, so it is listed after them.
"""

from __future__ import annotations

import math

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch

from rnnflow.callbacks.activations import ActivationMonitor
from rnnflow.callbacks.credit import CreditMonitor
from rnnflow.callbacks.gates import GateMonitor
from rnnflow.callbacks.logging import tensorboard_experiment
from rnnflow.callbacks.lyapunov import LyapunovMonitor
from rnnflow.callbacks.probe_listener import ProbeListener
from rnnflow.callbacks.schedule import is_last_batch
from rnnflow.probes.credit import early_share
from rnnflow.probes.gradient_flow import LayerBackward
from rnnflow.probes.profile_stats import decay_fit


def _log10(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), np.nan)


def why_figure(
    name: str,
    step: int,
    hidden: np.ndarray,
    cell: np.ndarray | None = None,
    lyapunov: float | None = None,
    derivative: np.ndarray | None = None,
    credit: np.ndarray | None = None,
    timescale: tuple[str, float] | None = None,
) -> plt.Figure:
    """The figure of the module docstring from plain arrays ``(T,)``."""
    panels = 1 + (derivative is not None) + (credit is not None)
    figure, axes = plt.subplots(panels, 1, figsize=(6.4, 2.2 + 1.7 * panels), dpi=100, sharex=True)
    axes = np.atleast_1d(axes)
    steps = np.arange(len(hidden))
    top = axes[0]
    top.plot(steps, _log10(hidden), lw=3, alpha=0.5, label="‖∂L/∂h_t‖")
    if cell is not None:
        top.plot(steps, _log10(cell), lw=2, alpha=0.5, label="‖∂L/∂c_t‖")
    end = float(hidden[-1])
    distance = len(hidden) - 1 - steps
    alpha, fitted_end = (float(v) for v in decay_fit(torch.from_numpy(hidden)))
    if math.isfinite(alpha) and alpha > 0 and fitted_end > 0:
        top.plot(
            steps,
            math.log10(fitted_end) + distance * math.log10(alpha),
            "--",
            lw=1.2,
            label=f"fit: ln α = {math.log(alpha):.3g}",
        )
    if lyapunov is not None and math.isfinite(lyapunov) and end > 0:
        top.plot(
            steps,
            math.log10(end) + distance * lyapunov / math.log(10),
            ":",
            lw=1.5,
            label=f"Lyapunov: λ₁ = {lyapunov:.3g}",
        )
    if timescale is not None:
        top.set_title(
            f"{name}, step {step}: {timescale[0]} timescale τ = {timescale[1]:.3g} steps", fontsize=9
        )
    else:
        top.set_title(f"{name}, training step {step}", fontsize=9)
    top.set_ylabel("log10 norm")
    top.legend(fontsize=7, loc="best")
    row = 1
    if derivative is not None:
        axes[row].plot(steps, derivative, color="tab:green")
        axes[row].set_ylabel("mean φ'(a_t)")
        row += 1
    if credit is not None:
        share = early_share(torch.from_numpy(credit))
        axes[row].plot(steps, _log10(credit), color="tab:red")
        axes[row].set_ylabel("log10 C_t")
        label = "n/a" if share is None else f"{share:.2g}"
        axes[row].set_title(f"contribution to ∂L/∂W_hh per step (early share {label})", fontsize=8)
    for axis in axes:
        axis.grid(alpha=0.3)
    axes[-1].set_xlabel("time step t")
    figure.tight_layout()
    return figure


class WhyItVanishes(ProbeListener):
    """Args: ``figure_every_n_steps`` (None: no pictures)."""

    def __init__(self, figure_every_n_steps: int | None = 1000) -> None:
        self.figure_every_n_steps = figure_every_n_steps
        self._hidden: dict[str, list[torch.Tensor]] = {}
        self._cell: dict[str, list[torch.Tensor]] = {}
        self._last_figure_step: int | None = None

    def _due(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> bool:
        if self.figure_every_n_steps is None:
            return False
        previous = self._last_figure_step
        crossed = (
            previous is None or step // self.figure_every_n_steps > previous // self.figure_every_n_steps
        )
        return crossed or is_last_batch(trainer, pl_module, started=False)

    def on_probe_layer(
        self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, layer: LayerBackward
    ) -> None:
        if self.figure_every_n_steps is None or trainer.global_rank != 0:
            return
        self._hidden.setdefault(layer.name, []).append(layer.hidden_profile().cpu())
        cell = layer.cell_profile()
        if cell is not None:
            self._cell.setdefault(layer.name, []).append(cell.cpu())

    def on_probe_end(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        hidden, cells = self._hidden, self._cell
        self._hidden, self._cell = {}, {}
        writer = tensorboard_experiment(trainer)
        if not hidden or writer is None or not self._due(trainer, pl_module, step):
            return
        self._last_figure_step = step
        found = {type(c): c for c in trainer.callbacks}
        lyapunov, activations = found.get(LyapunovMonitor), found.get(ActivationMonitor)
        credit, gates = found.get(CreditMonitor), found.get(GateMonitor)
        for name, parts in hidden.items():
            exponents = lyapunov.exponents.get(name) if lyapunov is not None and lyapunov.enabled else None
            derivative = (
                activations.profiles.get(name) if activations is not None and activations.enabled else None
            )
            contributions = credit.profiles.get(name) if credit is not None and credit.enabled else None
            gate = gates.latest.get(name) if gates is not None and gates.enabled else None
            figure = why_figure(
                name,
                step,
                torch.cat(parts).numpy(),
                torch.cat(cells[name]).numpy() if name in cells else None,
                None if exponents is None else float(exponents[0]),
                None if derivative is None else derivative.numpy(),
                None if contributions is None else contributions.numpy(),
                None if gate is None else (gate.memory_gate, gate.timescale),
            )
            writer.add_figure(f"why/{name}", figure, step)
        plt.close("all")

    def state_dict(self) -> dict[str, int | None]:
        return {"last_figure_step": self._last_figure_step}

    def load_state_dict(self, state_dict: dict[str, int | None]) -> None:
        self._last_figure_step = state_dict.get("last_figure_step")
