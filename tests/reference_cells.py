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


def unrolled_module(module: nn.RNNBase, inputs: torch.Tensor, hx=None, name: str = "rnn"):
    """Unrolled ``module(inputs, hx)``: a multi-layer, maybe bidirectional nn.RNN/LSTM/GRU (eval mode).

    Returns ``(output, final state, hidden, cell)``: ``hidden[layer name]`` is the list of the
    layer's states ``h_t`` in its own processing order (a reverse direction starts at the last
    input), each retaining its gradient; ``cell`` likewise for the LSTM. Layer names as rnnflow's:
    ``<name>/layer<l>`` and ``<name>/layer<l>_reverse``.
    """
    batch_first = module.batch_first
    x = inputs.transpose(0, 1) if batch_first else inputs
    directions = 2 if module.bidirectional else 1
    is_lstm = isinstance(module, nn.LSTM)
    h0, c0 = (hx if is_lstm else (hx, None)) if hx is not None else (None, None)
    hidden: dict[str, list[torch.Tensor]] = {}
    cell: dict[str, list[torch.Tensor]] = {}
    finals_h, finals_c = [], []
    for layer in range(module.num_layers):
        outputs = []
        for d in range(directions):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh = getattr(module, "weight_ih" + sfx), getattr(module, "weight_hh" + sfx)
            b_ih, b_hh = getattr(module, "bias_ih" + sfx), getattr(module, "bias_hh" + sfx)
            index = layer * directions + d
            h = x.new_zeros(x.size(1), module.hidden_size) if h0 is None else h0[index]
            c = torch.zeros_like(h) if c0 is None else c0[index]
            steps = list(x.unbind(0))
            if d:
                steps = steps[::-1]
            hs, cs = [], []
            for xt in steps:
                a_in, a_h = xt @ w_ih.T + b_ih, h @ w_hh.T + b_hh
                if is_lstm:
                    i, f, g, o = (a_in + a_h).chunk(4, dim=-1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    c.retain_grad()
                    cs.append(c)
                    h = torch.sigmoid(o) * torch.tanh(c)
                elif isinstance(module, nn.GRU):
                    ir, iz, in_ = a_in.chunk(3, dim=-1)
                    hr, hz, hn = a_h.chunk(3, dim=-1)
                    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                    h = (1 - z) * torch.tanh(in_ + r * hn) + z * h
                else:
                    a = a_in + a_h
                    h = torch.tanh(a) if module.nonlinearity == "tanh" else torch.relu(a)
                h.retain_grad()
                hs.append(h)
            key = f"{name}/layer{layer}" + ("_reverse" if d else "")
            hidden[key], cell[key] = hs, cs
            finals_h.append(hs[-1])
            finals_c.append(cs[-1] if is_lstm else None)
            outputs.append(torch.stack(hs[::-1] if d else hs))
        x = torch.cat(outputs, dim=-1)
    output = x.transpose(0, 1) if batch_first else x
    h_n = torch.stack(finals_h)
    final = (h_n, torch.stack(finals_c)) if is_lstm else h_n
    return output, final, hidden, cell


def grads_of(states: list[torch.Tensor]) -> torch.Tensor:
    """``(T, B, H)`` gradients of a list of states (zeros where none arrived)."""
    return torch.stack([s.grad if s.grad is not None else torch.zeros_like(s) for s in states])
