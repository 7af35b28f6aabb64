"""Unrolled autograd reference for the gradient-flow probe: one cell step at a time.

Each step's hidden state (and LSTM cell state) is a separate autograd node whose
``.grad`` after backward is the total ∂L/∂h_t (∂L/∂c_t) by definition. Independent of
rnnflow's fused-call algebra: it only reads the layer's parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from rnnflow.models import SigmoidRNN


class UnrolledReference:
    """A ``layer_call`` for RecurrentNet that unrolls each layer and keeps every state."""

    def __init__(self) -> None:
        self.hidden: dict[int, list[torch.Tensor]] = {}
        self.cell: dict[int, list[torch.Tensor]] = {}

    def layer_call(
        self, index: int, layer: nn.Module, inputs: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, None]:
        """Unrolled ``layer(inputs, state)``; ``state`` in the layer's own convention (None: zeros)."""
        batch_first = layer.batch_first
        xs = (inputs.transpose(0, 1) if batch_first else inputs).unbind(0)
        w_ih, w_hh = layer.weight_ih_l0, layer.weight_hh_l0
        b_ih, b_hh = layer.bias_ih_l0, layer.bias_hh_l0
        hidden = layer.hidden_size
        h = xs[0].new_zeros(xs[0].size(0), hidden)
        c = torch.zeros_like(h)
        if isinstance(state, tuple):
            h, c = state[0][0], state[1][0]
        elif state is not None:
            h = (state[0] + 1) / 2 if isinstance(layer, SigmoidRNN) else state[0]
        hs, cs = [], []
        for x in xs:
            a_in = x @ w_ih.T + b_ih
            a_h = h @ w_hh.T + b_hh
            if isinstance(layer, SigmoidRNN):
                h = torch.sigmoid(a_in + a_h)
            elif isinstance(layer, nn.RNN):
                h = torch.tanh(a_in + a_h) if layer.nonlinearity == "tanh" else torch.relu(a_in + a_h)
            elif isinstance(layer, nn.LSTM):
                i, f, g, o = (a_in + a_h).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                c.retain_grad()
                cs.append(c)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:  # GRU
                ir, iz, in_ = a_in.split(hidden, dim=-1)
                hr, hz, hn = a_h.split(hidden, dim=-1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                n = torch.tanh(in_ + r * hn)
                h = (1 - z) * n + z * h
            h.retain_grad()
            hs.append(h)
        self.hidden[index], self.cell[index] = hs, cs
        return torch.stack(hs, dim=1 if batch_first else 0), None

    def hidden_grads(self, index: int) -> torch.Tensor:
        """``(T, B, H)`` total ∂L/∂h_t of layer ``index``."""
        return torch.stack(
            [h.grad if h.grad is not None else torch.zeros_like(h) for h in self.hidden[index]]
        )

    def cell_grads(self, index: int) -> torch.Tensor:
        return torch.stack([c.grad if c.grad is not None else torch.zeros_like(c) for c in self.cell[index]])
