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

import lightning as L

from rnnflow.probes.gradient_flow import LayerBackward


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
