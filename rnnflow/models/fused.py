"""One fused recurrent call, with an optional extra input block for gradient probes.

Every recurrent layer of rnnflow is run by one call of PyTorch's fused kernels
(``_VF.rnn_tanh``, ``_VF.rnn_relu``, ``_VF.lstm``, ``_VF.gru``: cuDNN on a GPU, the
fused CPU kernel otherwise). :class:`FusedSpec` describes that call for a layer:

    u_t = Cell(W_ih x_t + b_ih,  W_hh u_{t-1} + b_hh),   u_{-1} = initial_value
    h_t = out_scale · u_t + out_shift                       (the layer's hidden state)

For ``nn.RNN``/``nn.LSTM``/``nn.GRU`` the affine map is the identity and ``u = h``.

The sigmoid RNN ``h_t = σ(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` has no fused
kernel; since ``σ(a) = (1 + tanh(a/2)) / 2``, the substitution ``u = 2h - 1`` turns it
*exactly* into a fused tanh RNN:

    u_t = tanh( (W_ih/2) x_t + (W_hh/4) u_{t-1} + [(b_ih + b_hh)/2 + (W_hh/4)·1] ),
    u_{-1} = -1,   h_t = (u_t + 1) / 2,

so it runs at fused speed and autograd carries the gradients back to ``W_ih``, ``W_hh``.

:func:`run_fused` can append an extra input ``e`` (``(…, K)``, zeros) whose input
weight block is ``A`` (``(G·H, K)``, constant): ``W_ih x_t`` becomes
``W_ih x_t + A e_t``. The forward pass is unchanged (``e = 0``), and after backward
``∂L/∂e_t = Aᵀ δ_t``, where ``δ_t`` is the total gradient of the gate pre-activations at
step ``t`` (see :mod:`rnnflow.probes.gradient_flow`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import _VF, nn

KERNELS = {"rnn_tanh": _VF.rnn_tanh, "rnn_relu": _VF.rnn_relu, "lstm": _VF.lstm, "gru": _VF.gru}
KERNEL_OF_MODE = {"RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu", "LSTM": "lstm", "GRU": "gru"}
GATE_COUNT = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


class SigmoidRNN(nn.Module):
    """A single-layer sigmoid RNN run as a fused tanh RNN (see the module docstring).

    Parameters carry ``nn.RNN``'s names (``weight_ih_l0``, ``weight_hh_l0``,
    ``bias_ih_l0``, ``bias_hh_l0``) and meaning, so init schemes and spectra apply as-is.
    Input ``(B, T, I)`` if ``batch_first`` else ``(T, B, I)``; returns ``(h, u_last)``.
    """

    def __init__(
        self, input_size: int, hidden_size: int, batch_first: bool = True, bias: bool = True
    ) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.batch_first, self.bias, self.num_layers = batch_first, bias, 1
        bound = hidden_size**-0.5
        self.weight_ih_l0 = nn.Parameter(torch.empty(hidden_size, input_size).uniform_(-bound, bound))
        self.weight_hh_l0 = nn.Parameter(torch.empty(hidden_size, hidden_size).uniform_(-bound, bound))
        if bias:
            self.bias_ih_l0 = nn.Parameter(torch.empty(hidden_size).uniform_(-bound, bound))
            self.bias_hh_l0 = nn.Parameter(torch.empty(hidden_size).uniform_(-bound, bound))

    def forward(
        self, inputs: torch.Tensor, hx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(h, u_last)``; the state ``u = 2h - 1`` is what ``hx`` takes back."""
        return run_fused(fused_spec(self), inputs, state=hx)


@dataclass
class FusedSpec:
    """The fused call that computes a layer: kernel, weights in kernel space, state map."""

    kernel: str
    weights: list[torch.Tensor]  # [W_ih (G·H, I), W_hh (G·H, H), b_ih (G·H,), b_hh (G·H,)]
    hidden_size: int
    batch_first: bool
    training: bool
    initial_value: float = 0.0
    out_scale: float = 1.0
    out_shift: float = 0.0

    @property
    def cell(self) -> str:
        """``rnn``, ``lstm`` or ``gru``: the algebra of the gradient through one step."""
        return "rnn" if self.kernel.startswith("rnn") else self.kernel

    @property
    def has_bias(self) -> bool:
        return len(self.weights) == 4


def fused_spec(layer: nn.Module) -> FusedSpec:
    """The :class:`FusedSpec` of a single-layer ``nn.RNN``/``nn.LSTM``/``nn.GRU``/``SigmoidRNN``."""
    if isinstance(layer, SigmoidRNN):
        w_ih, w_hh = layer.weight_ih_l0, layer.weight_hh_l0
        offset = w_hh.sum(dim=1) / 4  # W_hh h = (W_hh/2) u + (W_hh/2)·1, then halved
        if layer.bias:
            offset = offset + (layer.bias_ih_l0 + layer.bias_hh_l0) / 2
        weights = [w_ih / 2, w_hh / 4, offset, torch.zeros_like(offset)]
        return FusedSpec(
            "rnn_tanh", weights, layer.hidden_size, layer.batch_first, layer.training, -1.0, 0.5, 0.5
        )
    if not isinstance(layer, nn.RNNBase) or layer.num_layers != 1 or layer.bidirectional:
        raise TypeError(f"expected a single-layer unidirectional fused RNN, got {layer!r}")
    if layer.proj_size:
        raise TypeError("LSTM projections (proj_size > 0) are not supported")
    names = ["weight_ih_l0", "weight_hh_l0"] + (["bias_ih_l0", "bias_hh_l0"] if layer.bias else [])
    weights = [getattr(layer, name) for name in names]
    kernel = KERNEL_OF_MODE[layer.mode]
    return FusedSpec(kernel, weights, layer.hidden_size, layer.batch_first, layer.training)


State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # (1, B, H), or (h, c) for the LSTM


def initial_state(spec: FusedSpec, inputs: torch.Tensor) -> State:
    """The state before step 0 in kernel space: ``u_{-1}`` (and ``c_{-1} = 0`` for the LSTM)."""
    batch = inputs.size(0 if spec.batch_first else 1)
    h0 = inputs.new_full((1, batch, spec.hidden_size), spec.initial_value)
    return (h0, torch.zeros_like(h0)) if spec.kernel == "lstm" else h0


def run_fused(
    spec: FusedSpec,
    inputs: torch.Tensor,
    state: State | None = None,
    raw_output: bool = False,
) -> tuple[torch.Tensor, State]:
    """Run the fused call from ``state`` (None: the initial state); returns ``(h, final state)``.

    Shapes: ``inputs`` ``(B, T, I)`` (``(T, B, I)`` unless batch_first); output ``(B, T, H)``
    (``u`` if ``raw_output``). States are in kernel space (``u``), as the next call expects them.
    """
    hx = initial_state(spec, inputs) if state is None else state
    with warnings.catch_warnings():
        # cuDNN warns that these weights are not one contiguous buffer (it copies them).
        warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
        result = KERNELS[spec.kernel](
            inputs, hx, spec.weights, spec.has_bias, 1, 0.0, spec.training, False, spec.batch_first
        )
    u, final = result[0], (result[1], result[2]) if spec.kernel == "lstm" else result[1]
    if raw_output or (spec.out_scale == 1.0 and spec.out_shift == 0.0):
        return u, final
    return u * spec.out_scale + spec.out_shift, final
