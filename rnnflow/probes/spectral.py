"""Spectral radius and spectral norm of every recurrent gate block.

For each layer and gate block ``W`` (``H × H``; rnn: ``W_hh``, lstm: ``i f g o``,
gru: ``r z n``):

* ``radius = ρ(W) = max_i |λ_i(W)|``: the asymptotic per-step growth of ``W^k``; for a
  linear recurrence the gradient shrinks (ρ < 1) or explodes (ρ > 1) like ``ρ^k``.
* ``norm = ‖W‖₂ = σ_max(W)``: a bound on one step's amplification (``ρ ≤ ‖W‖₂``);
  for a tanh RNN the per-step Jacobian norm is at most ``‖W‖₂``, for sigmoid ``‖W‖₂ / 4``.

Eigenvalues are LAPACK on the CPU (a GPU tensor is copied; measured ~12 ms at
H = 256), so this runs every ``diagnostics.spectral_every_n_steps`` steps, not every step.
"""

from __future__ import annotations

import torch
from torch import nn

from rnnflow.models import GATES
from rnnflow.probes.recurrent_modules import LayerKey, cell_of, recurrent_weight


def gate_spectra(weight_hh: torch.Tensor, gate_names: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """``{gate: (radius, norm)}`` of the stacked ``(G·H, H)`` recurrent weight."""
    blocks = weight_hh.detach().to("cpu", torch.float64).chunk(len(gate_names), dim=0)
    stacked = torch.stack(blocks)  # (G, H, H)
    radii = torch.linalg.eigvals(stacked).abs().amax(dim=-1)
    norms = torch.linalg.matrix_norm(stacked, ord=2)
    return {gate: (float(r), float(n)) for gate, r, n in zip(gate_names, radii, norms, strict=True)}


def network_spectra(layers: dict[str, tuple[nn.Module, LayerKey]]) -> dict[str, float]:
    """Flat ``{"spectral/L/radius": …}`` (rnn) or ``{"spectral/L/f/radius": …}`` for every layer ``L``.

    ``layers``: ``{layer name: (module, key)}`` (:func:`rnnflow.probes.recurrent_modules.named_layers`).
    """
    scalars: dict[str, float] = {}
    for name, (module, key) in layers.items():
        cell = cell_of(module)
        for gate, (radius, norm) in gate_spectra(recurrent_weight(module, key), GATES[cell]).items():
            prefix = f"spectral/{name}/" + ("" if cell == "rnn" else f"{gate}/")
            scalars[prefix + "radius"] = radius
            scalars[prefix + "norm"] = norm
    return scalars
