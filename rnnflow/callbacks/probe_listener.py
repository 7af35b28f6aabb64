"""The hook through which instruments receive the gradient-flow probe's per-layer data.

:class:`rnnflow.callbacks.gradient_flow.GradientFlowMonitor` owns the probe. On probe steps it calls,
on every callback of the trainer that subclasses :class:`ProbeListener`:

* ``on_probe_layer(trainer, pl_module, step, layer)`` once per probed layer call, after its backward,
  with a :class:`rnnflow.probes.gradient_flow.LayerBackward` (inputs, trajectory, total ∂L/∂h_t and
  ∂L/∂c_t, time-major). The tensors are freed after the call: keep what you need, reduced.
  ``layer.name`` is the layer's tag name (``layer0``, or ``encoder.rnn/layer0`` in a model with
  several recurrent modules).
* ``on_probe_end(trainer, pl_module, step)`` once after the step's layers, to write what was reduced.
* ``profile_lines()`` after ``on_probe_end``: straight lines the listener predicts for the gradient
  profile picture ``grad_flow/profile``, ``{label: {layer name: r}}``, each drawn as
  ``‖∂L/∂h_{T−1}‖ · r^{T−1−t}`` (e.g. ``e^{λ₁}`` of the Lyapunov exponent).

Like Lightning's own hooks these are no-ops by default; a listener never sets attributes on the
monitor or the module.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import lightning as L
import numpy as np

from rnnflow.callbacks.logging import log_scalars, tensorboard_experiment
from rnnflow.callbacks.trajectory import release
from rnnflow.probes.gradient_flow import LayerBackward
from rnnflow.report.profiles import write_profiles

Part = TypeVar("Part")


class ProbeListener(L.Callback):
    """Base of the callbacks that consume the gradient-flow probe's per-layer data on probe steps."""

    def on_probe_layer(
        self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, layer: LayerBackward
    ) -> None:
        """One probed layer call after its backward (several per layer under truncated BPTT)."""

    def on_probe_end(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        """All layers of the probe step were handed over."""

    def profile_lines(self) -> dict[str, dict[str, float]]:
        """Per-step factors to draw in the gradient profile picture: ``{label: {layer name: r}}``."""
        return {}


class LayerInstrument(ProbeListener, Generic[Part]):
    """A probe listener that measures every probed layer call and summarises each layer at the step's end.

    Subclasses implement :meth:`measure` (one layer call → a reduced part, kept on the host; None to
    skip the call) and :meth:`summarise` (a layer's parts, in call order, e.g. the chunks of a
    truncated-BPTT step → its scalars and its per-step series). The scalars go through every logger;
    the series, if ``group`` is set, to TensorBoard as the full-resolution profile record
    ``<group>/<layer>/profile`` (:mod:`rnnflow.report.profiles`). ``last_scalars`` keeps the last
    probe's scalars (the verdict and the end-of-run summary read them).

    Args:
        enabled: False turns the instrument off (nothing is computed).
        sequences: use the first that many samples of the probe batch (None: all).
    """

    group: str | None = None
    labels: dict[str, str] = {}

    def __init__(self, enabled: bool = True, sequences: int | None = None) -> None:
        self.enabled = enabled
        self.sequences = sequences
        self._parts: dict[str, list[Part]] = {}
        self.last_scalars: dict[str, float] = {}

    def measure(self, layer: LayerBackward) -> Part | None:
        raise NotImplementedError

    def summarise(self, name: str, parts: list[Part]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        raise NotImplementedError

    def on_probe_layer(
        self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, layer: LayerBackward
    ) -> None:
        if not self.enabled:
            return
        part = self.measure(layer)
        if part is not None:
            self._parts.setdefault(layer.name, []).append(part)

    def on_probe_end(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        release()
        if not self._parts:
            return
        metrics: dict[str, float] = {}
        records: dict[str, dict[str, np.ndarray]] = {}
        for name, parts in self._parts.items():
            scalars, series = self.summarise(name, parts)
            metrics.update(scalars)
            if series:
                records[name] = series
        self._parts.clear()
        self.last_scalars = metrics
        log_scalars(trainer, metrics, step)
        writer = tensorboard_experiment(trainer)
        if writer is not None and self.group is not None:
            for name, series in records.items():
                write_profiles(writer, self.group, name, step, series, self.labels)
