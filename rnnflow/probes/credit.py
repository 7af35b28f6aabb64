"""Temporal credit assignment: how much of the recurrent weight gradient comes from each step.

The gradient of the recurrent weights is a sum over steps (batch ``B``, hidden ``H``, gates ``G``):

    ∂L/∂W_hh = Σ_t Σ_b δ_{t,b} h_{t−1,b}ᵀ ,      C_t = ‖Σ_b δ_{t,b} h_{t−1,b}ᵀ‖_F ,

with ``δ_t = ∂L/∂a_t`` ``(B, G·H)`` the total gradient of the step's recurrent pre-activations and
``h_{t−1}`` ``(B, H)`` the previous hidden state. ``C`` ``(T,)`` is the credit profile: where in
time the weight update comes from. Without forming the T outer products (``T·G·H·H·B``):

    C_t² = Σ_{b,b'} (δ_{t,b}·δ_{t,b'}) (h_{t−1,b}·h_{t−1,b'})

from the two batched Gram matrices ``δ_t δ_tᵀ`` and ``h_{t−1} h_{t−1}ᵀ`` ``(T, B, B)``, in
``O(T·B²·(G+1)·H)``. Each step's ``δ_t`` and ``h_{t−1}`` are first divided by their largest entry
(put back, in float64, at the end): vanishing gradients of 1e−20 would otherwise underflow
in the squares of a float32 Gram matrix.

``early_share = Σ_{t < ⌊T/2⌋} C_t / Σ_t C_t``: the share of the credit that the first half of the
sequence receives; near 0 the weights learn from the last steps only (None when every ``C_t = 0``).

``δ_t`` from the total ``∂L/∂h_t`` (and ``∂L/∂c_t``) of the probe and the recomputed gates:

* RNN (user space ``h = φ(a')``): ``δ_t = ∂L/∂h_t ⊙ φ'(a'_t)`` (:mod:`rnnflow.probes.activations`);
  the sigmoid RNN's ``h_{t−1} = s·u_{t−1} + c``.
* LSTM ``i f g o``: ``[∂L/∂c_t ⊙ g_t i_t(1−i_t), ∂L/∂c_t ⊙ c_{t−1} f_t(1−f_t),
  ∂L/∂c_t ⊙ i_t(1−g_t²), ∂L/∂h_t ⊙ tanh(c_t) o_t(1−o_t)]``.
* GRU ``r z n``: with ``δ^n = ∂L/∂h_t ⊙ (1−z)(1−n²)``, the blocks multiplying ``h_{t−1}`` in the
  gradient of ``W_hh = [W_hr; W_hz; W_hn]`` are ``[δ^n ⊙ m_t ⊙ r(1−r), ∂L/∂h_t ⊙ (h_{t−1}−n) z(1−z),
  δ^n ⊙ r]`` (``m_t = W_hn h_{t−1} + b_hn``).
"""

from __future__ import annotations

import torch

from rnnflow.probes.activations import derivatives
from rnnflow.probes.trajectory import Trajectory


def step_deltas(
    trajectory: Trajectory, hidden_grad: torch.Tensor, cell_grad: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(δ (T, B, G·H), h_{t−1} (T, B, H))`` in the user's parametrisation (module docstring)."""
    spec = trajectory.spec
    dh = hidden_grad.to(trajectory.outputs.dtype)
    if spec.cell == "rnn":
        slope, _, _ = derivatives(trajectory)
        scale, shift = spec.out_scale, spec.out_shift
        previous = (
            trajectory.previous if (scale, shift) == (1.0, 0.0) else trajectory.previous * scale + shift
        )
        return slope.mul_(dh), previous
    if spec.cell == "lstm":
        if cell_grad is None:
            raise ValueError("the LSTM's credit needs the total cell-state gradient ∂L/∂c_t")
        dc = cell_grad.to(dh.dtype)
        i, f, g, o = (trajectory.gate_value(k) for k in range(4))
        blocks = [
            dc * g * i * (1 - i),
            dc * trajectory.previous_cells * f * (1 - f),
            dc * i * (1 - g.square()),
            dh * torch.tanh(trajectory.cells) * o * (1 - o),
        ]
        return torch.cat(blocks, dim=-1), trajectory.previous
    r, z, n = (trajectory.gate_value(k) for k in range(3))
    delta_n = dh * (1 - z) * (1 - n.square())
    blocks = [
        delta_n * trajectory.recurrent_n * r * (1 - r),
        dh * (trajectory.previous - n) * z * (1 - z),
        delta_n * r,
    ]
    return torch.cat(blocks, dim=-1), trajectory.previous


def _scaled(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tensor / m_t, m_t)`` with ``m_t`` the largest ``|entry|`` of each step (1 where all are 0)."""
    largest = tensor.abs().amax(dim=(1, 2))
    safe = torch.where(largest > 0, largest, torch.ones_like(largest))
    return tensor / safe.view(-1, 1, 1), largest.double()


def step_norms(tensor: torch.Tensor) -> torch.Tensor:
    """``(T, B, K)`` → ``(T,)`` float64 ``‖·‖_F`` per step, scaled by its largest entry (no underflow)."""
    scaled, largest = _scaled(tensor)
    return torch.linalg.vector_norm(scaled, dim=(1, 2)).double() * largest


def contribution_norms(delta: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """``C_t = ‖Σ_b δ_{t,b} h_{t−1,b}ᵀ‖_F`` for every t from Gram matrices: ``(T,)`` float64."""
    delta, delta_scale = _scaled(delta)
    previous, previous_scale = _scaled(previous)
    grams = torch.bmm(delta, delta.transpose(1, 2)).mul_(torch.bmm(previous, previous.transpose(1, 2)))
    squared = grams.double().sum(dim=(1, 2)).clamp_min_(0.0)  # ≥ 0 exactly; rounding may dip below
    return squared.sqrt() * delta_scale * previous_scale


def early_share(norms: torch.Tensor) -> float | None:
    """``Σ_{t < ⌊T/2⌋} C_t / Σ_t C_t`` (None if every ``C_t`` is 0)."""
    total = float(norms.double().sum())
    if total == 0.0:
        return None
    return float(norms[: norms.numel() // 2].double().sum()) / total


def credit_profile(
    trajectory: Trajectory, hidden_grad: torch.Tensor, cell_grad: torch.Tensor | None = None
) -> torch.Tensor:
    """``C`` ``(T,)`` float64 of one layer call (see the module docstring)."""
    delta, previous = step_deltas(trajectory, hidden_grad, cell_grad)
    return contribution_norms(delta, previous)
