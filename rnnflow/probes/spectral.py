"""Spectral radius and spectral norm of every recurrent gate block.

For each layer and gate block ``W`` (``H × H``; rnn: ``W_hh``, lstm: ``i f g o``,
gru: ``r z n``):

* ``radius = ρ(W) = max_i |λ_i(W)|``: the asymptotic per-step growth of ``W^k``; for a
  linear recurrence the gradient shrinks (ρ < 1) or explodes (ρ > 1) like ``ρ^k``.
* ``norm = ‖W‖₂ = σ_max(W)``: a bound on one step's amplification (``ρ ≤ ‖W‖₂``);
  for a tanh RNN the per-step Jacobian norm is at most ``‖W‖₂``, for sigmoid ``‖W‖₂ / 4``.

Eigenvalues are LAPACK on the CPU (a GPU tensor is copied; DESIGN fact 6: ~12 ms at
H = 256), so this runs every ``diagnostics.spectral_every_n_steps`` steps, not every step.
"""

from __future__ import annotations

import torch
from torch import nn

from rnnflow.models import GATES


def gate_spectra(weight_hh: torch.Tensor, gate_names: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """``{gate: (radius, norm)}`` of the stacked ``(G·H, H)`` recurrent weight."""
    blocks = weight_hh.detach().to("cpu", torch.float64).chunk(len(gate_names), dim=0)
    stacked = torch.stack(blocks)  # (G, H, H)
    radii = torch.linalg.eigvals(stacked).abs().amax(dim=-1)
    norms = torch.linalg.matrix_norm(stacked, ord=2)
    return {gate: (float(r), float(n)) for gate, r, n in zip(gate_names, radii, norms, strict=True)}


def network_spectra(layers: nn.ModuleList, cell: str) -> dict[str, float]:
    """Flat ``{"spectral/layer0/radius": …}`` (rnn) or ``{"spectral/layer0/f/radius": …}``."""
    gate_names = GATES[cell]
    scalars: dict[str, float] = {}
    for index, layer in enumerate(layers):
        for gate, (radius, norm) in gate_spectra(layer.weight_hh_l0, gate_names).items():
            prefix = f"spectral/layer{index}/" + ("" if cell == "rnn" else f"{gate}/")
            scalars[prefix + "radius"] = radius
            scalars[prefix + "norm"] = norm
    return scalars
