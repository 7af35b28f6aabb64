"""Activation derivatives along the trajectory of a probed layer call: where the chain is cut.

The gradient through one step of a vanilla RNN ``h_t = φ(a'_t)``, ``a'_t = W_ih x_t + b_ih +
W_hh h_{t-1} + b_hh``, is ``∂h_t/∂h_{t-1} = diag(φ'(a'_t)) W_hh``: every step multiplies the
backward signal by the activation derivatives. For the units ``j``, samples ``b`` and steps ``t``
of the probe batch (shapes ``(T, B, H)``):

* ``derivative_profile[t] = mean_{b,j} φ'(a'_{t,b,j})`` ``(T,)``, ``derivative_mean`` its mean
  over t;
* ``saturated_fraction = #{φ' < ε · max φ'} / (T·B·H)``: entries whose derivative is below a
  fraction ε (``threshold``, default 0.01) of the nonlinearity's largest derivative (tanh: 1,
  so ``|h| > 0.995``; sigmoid: ¼, so ``h < 0.0025`` or ``h > 0.9975``; ReLU: the inactive
  entries, ``φ' = 0``);
* ReLU only: ``dead_fraction``, the units never active (``h ≤ 0``) at any step of any sample
  (``batch_outputs``: of the whole probe batch, when the other statistics use a few samples of it).

The derivatives come from the layer's outputs (kernel space ``u``, ``h = s·u + c``; see
:mod:`rnnflow.probes.trajectory`): tanh ``1 − u²``; the sigmoid RNN (``u = tanh(a'/2)``,
``s = ½``) ``σ'(a') = h(1 − h) = s²(1 − u²)``; ReLU ``[u > 0]``. Gated cells have no such
per-step factor on every path (the cell state or ``z ⊙ h`` is additive); for them this module
reports the candidate nonlinearity, LSTM ``g_t = tanh(a^g_t)`` and GRU ``n_t``, ``1 − tanh²``:
a saturated candidate stops new input from entering the memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rnnflow.probes.trajectory import Trajectory

SATURATION_THRESHOLD = 0.01


@dataclass
class ActivationStats:
    """Statistics of ``φ'`` over the probe batch; see the module docstring."""

    nonlinearity: str  # tanh | sigmoid | relu | lstm candidate g (tanh) | gru candidate n (tanh)
    derivative_profile: torch.Tensor  # (T,) float64
    derivative_mean: float
    saturated_fraction: float
    dead_fraction: float | None = None  # relu only
    ever_active: torch.Tensor | None = None  # relu only: (H,) bool, unit active at some (t, b)


def derivatives(trajectory: Trajectory) -> tuple[torch.Tensor, float, str]:
    """``(φ'(a'), max φ', name)``: the derivatives ``(T, B, H)`` of the layer's nonlinearity."""
    spec = trajectory.spec
    u = trajectory.outputs
    if spec.kernel == "rnn_relu":
        return (u > 0).to(u.dtype), 1.0, "relu"
    if spec.kernel == "rnn_tanh":
        scale = spec.out_scale
        slope = 1 - u.square()
        if scale == 1.0:
            return slope, 1.0, "tanh"
        return slope.mul_(scale * scale), scale * scale, "sigmoid"
    slope = 1 - trajectory.gate_value(2).square()
    if spec.cell == "lstm":
        return slope, 1.0, "lstm candidate g (tanh)"
    return slope, 1.0, "gru candidate n (tanh)"


def activation_stats(
    trajectory: Trajectory, threshold: float = SATURATION_THRESHOLD, batch_outputs: torch.Tensor | None = None
) -> ActivationStats:
    """:class:`ActivationStats` of one layer call (means accumulated in float64).

    ``batch_outputs``: the call's outputs ``u`` ``(T, B, H)`` over the whole batch, for the dead units
    (a unit silent on a few samples may fire on others); default: the trajectory's own samples.
    """
    slope, largest, name = derivatives(trajectory)
    profile = slope.double().mean(dim=(1, 2))
    saturated = float((slope < threshold * largest).double().mean())
    dead = ever_active = None
    if name == "relu":
        outputs = trajectory.outputs if batch_outputs is None else batch_outputs
        ever_active = outputs.amax(dim=(0, 1)) > 0  # (H,); a max reads the batch once, no (T, B, H) mask
        dead = float((~ever_active).double().mean())
    return ActivationStats(name, profile, float(profile.mean()), saturated, dead, ever_active)


def merge_activation_stats(parts: list[ActivationStats]) -> ActivationStats:
    """The statistics of consecutive calls of one layer (truncated BPTT chunks): profiles joined in time."""
    if len(parts) == 1:
        return parts[0]
    profile = torch.cat([p.derivative_profile for p in parts])
    total = profile.numel()
    saturated = sum(p.saturated_fraction * p.derivative_profile.numel() for p in parts) / total
    dead = ever_active = None
    if parts[0].ever_active is not None:
        ever_active = torch.stack([p.ever_active for p in parts]).any(dim=0)
        dead = float((~ever_active).double().mean())
    return ActivationStats(
        parts[0].nonlinearity, profile, float(profile.mean()), saturated, dead, ever_active
    )
