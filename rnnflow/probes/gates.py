"""Gate statistics of LSTM and GRU layers along the probe batch's trajectory.

LSTM (PyTorch's gate order ``i f g o``): ``c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t``, ``h_t = o_t ⊙
tanh(c_t)``. Along the cell state the gradient is carried back by ``∂c_t/∂c_{t-1} = diag(f_t)``:
a unit whose forget gate stays near ``f̄`` keeps a memory (and passes a gradient) over about

    τ = −1 / ln f̄   steps   (f̄^τ = 1/e).

GRU (PyTorch's convention ``h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}``): the update gate ``z``
plays the forget gate's role (``∂h_t/∂h_{t-1} ∋ diag(z_t)``), ``τ = −1 / ln z̄``; ``r`` gates
the recurrent input of the candidate ``n``.

Per layer, over the samples ``b`` and steps ``t`` of the probe batch (gates ``(T, B, H)``):

* ``means``: ``mean_{t,b,j}`` of every gate (lstm ``input forget output``, gru ``reset update``);
* ``timescales`` ``(H,)``: ``τ_j = −1 / ln ḡ_j`` with ``ḡ_j = mean_{t,b} g_{t,b,j}`` for the
  forget (lstm) or update (gru) gate, and ``timescale``, its median over units (the lower
  middle value for even H).

``ln ḡ_j`` is computed as ``log1p(−mean_{t,b} σ(−a_{t,b,j}))`` in float64 from the
pre-activations ``a``: ``1 − ḡ`` is then exact however close ``ḡ`` is to 1 (a forget bias of 20
gives ``1 − f ≈ 2e−9``, where ``ln`` of a rounded ``f̄`` would give 0 and ``τ = ∞``). ``τ = ∞``
only where ``σ(−a)`` underflows float64 (``a > 745``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rnnflow.probes.trajectory import Trajectory

GATE_NAMES = {"lstm": {"input": 0, "forget": 1, "output": 3}, "gru": {"reset": 0, "update": 1}}
MEMORY_GATE = {"lstm": "forget", "gru": "update"}


@dataclass
class GateStats:
    """See the module docstring."""

    means: dict[str, float]
    memory_gate: str  # forget | update
    complement: torch.Tensor  # (H,) float64: 1 − ḡ_j of the memory gate
    steps: int  # T of the call (the weight of its means when calls are merged)

    @property
    def timescales(self) -> torch.Tensor:
        """``τ_j = −1 / ln ḡ_j`` ``(H,)`` float64, in steps."""
        return -1.0 / torch.log1p(-self.complement)

    @property
    def timescale(self) -> float:
        """The median over units of ``τ_j`` (the lower middle value for even H)."""
        return float(self.timescales.median())


def merge_gate_stats(parts: list[GateStats]) -> GateStats:
    """The statistics of consecutive calls of one layer (truncated BPTT chunks), weighted by their T."""
    total = sum(p.steps for p in parts)
    means = {name: sum(p.means[name] * p.steps for p in parts) / total for name in parts[0].means}
    complement = sum(p.complement * (p.steps / total) for p in parts)
    return GateStats(means, parts[0].memory_gate, complement, total)


def complement_means(preactivations: torch.Tensor) -> torch.Tensor:
    """``1 − mean_{t,b} σ(a_{t,b,j}) = mean_{t,b} σ(−a_{t,b,j})`` ``(H,)`` float64, without cancellation."""
    return torch.sigmoid(-preactivations.double()).mean(dim=(0, 1))


def timescales(preactivations: torch.Tensor) -> torch.Tensor:
    """``τ_j = −1 / ln mean_{t,b} σ(a_{t,b,j})`` for a gate's pre-activations ``(T, B, H)`` → ``(H,)``."""
    return -1.0 / torch.log1p(-complement_means(preactivations))


def gate_stats(trajectory: Trajectory) -> GateStats:
    """:class:`GateStats` of an LSTM or GRU layer call."""
    cell = trajectory.spec.cell
    if cell not in GATE_NAMES:
        raise ValueError(f"gate statistics need an lstm or gru layer, got {cell}")
    means = {
        name: float(trajectory.gate_value(index).double().mean()) for name, index in GATE_NAMES[cell].items()
    }
    memory = MEMORY_GATE[cell]
    complement = complement_means(trajectory.gate(GATE_NAMES[cell][memory]))
    return GateStats(means, memory, complement, trajectory.steps)
