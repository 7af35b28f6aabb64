"""RecurrentNet: input encoding → a stack of fused recurrent layers → linear head.

For layer ``l = 0 … L-1`` with input ``x^l`` (``x^0`` = encoded inputs, ``(B, T, F)``):

    h^l = Cell_l(x^l)                               (B, T, H), one fused nn.RNN/LSTM/GRU call
    u^l = h^l + x^l   if residual and l > 0 else h^l
    x^{l+1} = LayerNorm(u^l) if layer_norm else u^l

The head maps ``x^L`` to ``(B, O)`` from the last step (``readout="last"``) or to
``(B, T, O)`` at every step (``readout="all"``).

Each layer is its own single-layer fused module (cuDNN on a GPU, the fused CPU kernel
otherwise; the sigmoid RNN is an exact fused tanh RNN, :class:`SigmoidRNN`), so that a
probe can wrap one layer's call: :meth:`RecurrentNet.forward` takes an optional
``layer_call(index, layer, x, state) -> (h, final_state)`` that replaces ``layer(x, state)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from rnnflow.models.fused import SigmoidRNN
from rnnflow.models.init import initialise_recurrent_layer_

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
NONLINEARITIES = ("tanh", "relu", "sigmoid")

LayerState = Any  # what the layer returns as its final state and takes back as hx
LayerCall = Callable[[int, nn.Module, torch.Tensor, LayerState], tuple[torch.Tensor, LayerState]]


class RecurrentNet(nn.Module):
    """A stack of fused recurrent layers with an encoder and a read-out head."""

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        output_size: int,
        readout: str = "last",
        vocab_size: int | None = None,
        nonlinearity: str = "tanh",
        residual: bool = False,
        layer_norm: bool = False,
        init: dict | None = None,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"model.cell={cell!r}: expected one of {sorted(CELLS)}")
        if cell == "rnn" and nonlinearity not in NONLINEARITIES:
            raise ValueError(f"model.nonlinearity={nonlinearity!r}: expected one of {list(NONLINEARITIES)}")
        self.cell = cell
        self.hidden_size = hidden_size
        self.vocab_size = vocab_size
        self.readout = readout
        self.residual = residual
        layers: list[nn.Module] = []
        for index in range(num_layers):
            size_in = input_size if index == 0 else hidden_size
            if cell == "rnn" and nonlinearity == "sigmoid":
                layers.append(SigmoidRNN(size_in, hidden_size, batch_first=True))
            elif cell == "rnn":
                layers.append(nn.RNN(size_in, hidden_size, nonlinearity=nonlinearity, batch_first=True))
            else:
                layers.append(CELLS[cell](size_in, hidden_size, num_layers=1, batch_first=True))
        self.layers = nn.ModuleList(layers)
        self.norms = nn.ModuleList(
            [nn.LayerNorm(hidden_size) if layer_norm else nn.Identity() for _ in range(num_layers)]
        )
        self.head = nn.Linear(hidden_size, output_size)
        for layer in self.layers:
            initialise_recurrent_layer_(layer, cell, **(init or {}))

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` tokens → one-hot ``(B, T, V)``; float ``(B, T, F)`` passes through."""
        if self.vocab_size is not None:
            return nn.functional.one_hot(inputs, self.vocab_size).to(self.head.weight.dtype)
        return inputs

    def forward(
        self,
        inputs: torch.Tensor,
        layer_call: LayerCall | None = None,
        states: list[LayerState] | None = None,
        return_states: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[LayerState]]:
        """Read-out ``(B, O)`` or ``(B, T, O)``; with ``return_states`` also each layer's final state.

        ``states`` (one per layer, as returned before) continue a sequence, as in truncated
        BPTT; None starts every layer from its initial state.
        """
        x = self.encode(inputs)
        finals = []
        for index, (layer, norm) in enumerate(zip(self.layers, self.norms, strict=True)):
            state = None if states is None else states[index]
            if layer_call is None:
                h, final = layer(x, state)
            else:
                h, final = layer_call(index, layer, x, state)
            finals.append(final)
            if self.residual and index > 0:
                h = h + x
            x = norm(h)
        if self.readout == "last":
            x = x[:, -1]
        outputs = self.head(x)
        return (outputs, finals) if return_states else outputs
