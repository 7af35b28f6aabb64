"""Initialisation schemes for fused recurrent layers, applied gate block by gate block.

A fused layer stores its gates stacked: ``weight_hh`` is ``(G·H, H)`` and ``weight_ih``
is ``(G·H, I)`` with ``G = 1`` (RNN), ``4`` (LSTM, gates ``i f g o``) or ``3`` (GRU,
gates ``r z n``). Every scheme is applied to each ``H × H`` (or ``H × I``) block on its
own, so that, e.g., ``orthogonal`` makes every gate's recurrent matrix orthogonal.

Schemes (``model.init.recurrent`` / ``model.init.input``):

* ``default``: leave PyTorch's ``U(-1/√H, 1/√H)``.
* ``normal``: ``N(0, std²)`` with ``model.init.std`` (null: ``1/√fan_in``).
* ``xavier``: Glorot uniform, ``U(-a, a)``, ``a = √(6 / (fan_in + fan_out))``.
* ``kaiming``: He normal, ``N(0, 2 / fan_in)``.
* ``orthogonal``: a uniformly drawn (semi-)orthogonal matrix (Saxe et al. 2014).
* ``identity``: ``I`` (recurrent only; the IRNN of Le et al. 2015).
* ``zeros``: all zeros.

Biases (``model.init.bias``): ``default`` or ``zeros``. LSTM ``model.init.forget_bias``
sets the forget gate's total bias ``b_ih[f] + b_hh[f]`` to the given value, or, with
``chrono`` (Tallec & Ollivier 2018, "Can recurrent neural networks warp time?"), draws it per
unit as

    b_f = ln u,  u ~ U(1, T_max − 1),      b_i = −b_f

(total biases; ``T_max`` = ``model.init.chrono_max``, the longest dependency expected, by
default ``task.seq_len``): a unit's forget gate at rest is ``σ(b_f) = u / (1 + u)``, a memory
timescale ``−1/ln σ(b_f) ≈ u`` steps, spread over ``[1, T_max − 1]``.

``model.init.spectral_radius = ρ`` then rescales every recurrent block ``W`` to
``ρ · W / ρ(W)``, where ``ρ(W) = max |λ_i(W)|``, so that its spectral radius is exactly ρ.
"""

from __future__ import annotations

import math

import torch
from torch import nn

RECURRENT_SCHEMES = ("default", "normal", "xavier", "kaiming", "orthogonal", "identity", "zeros")
INPUT_SCHEMES = ("default", "normal", "xavier", "kaiming", "orthogonal", "zeros")
BIAS_SCHEMES = ("default", "zeros")
FORGET_BIAS_SCHEMES = ("chrono",)

GATES: dict[str, tuple[str, ...]] = {"rnn": ("h",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}


def gate_blocks(weight: torch.Tensor, num_gates: int) -> tuple[torch.Tensor, ...]:
    """Views of the ``num_gates`` stacked row blocks of a fused weight ``(G·H, K)``."""
    return weight.chunk(num_gates, dim=0)


@torch.no_grad()
def init_block_(block: torch.Tensor, scheme: str, std: float | None = None) -> None:
    """Initialise one ``(H, K)`` block in place with ``scheme``."""
    fan_out, fan_in = block.shape
    if scheme == "default":
        return
    if scheme == "normal":
        block.normal_(0.0, std if std is not None else 1.0 / math.sqrt(fan_in))
    elif scheme == "xavier":
        nn.init.xavier_uniform_(block)
    elif scheme == "kaiming":
        nn.init.kaiming_normal_(block, mode="fan_in", nonlinearity="relu")
    elif scheme == "orthogonal":
        nn.init.orthogonal_(block)
    elif scheme == "identity":
        if fan_out != fan_in:
            raise ValueError(f"identity init needs a square block, got {tuple(block.shape)}")
        block.copy_(torch.eye(fan_in, dtype=block.dtype, device=block.device))
    elif scheme == "zeros":
        block.zero_()
    else:
        raise ValueError(f"unknown init scheme {scheme!r}; expected one of {RECURRENT_SCHEMES}")


def spectral_radius(matrix: torch.Tensor) -> torch.Tensor:
    """``max_i |λ_i(W)|`` of a square matrix (computed in float64 on the CPU)."""
    return torch.linalg.eigvals(matrix.detach().double().cpu()).abs().max()


@torch.no_grad()
def rescale_spectral_radius_(block: torch.Tensor, radius: float) -> None:
    """Rescale a square block in place so that its spectral radius is exactly ``radius``."""
    current = float(spectral_radius(block))
    if current == 0.0:
        raise ValueError("model.init.spectral_radius: the recurrent matrix is nilpotent (spectral radius 0)")
    block.mul_(radius / current)


@torch.no_grad()
def initialise_recurrent_layer_(
    layer: nn.RNNBase,
    cell: str,
    recurrent: str = "default",
    input: str = "default",
    bias: str = "default",
    std: float | None = None,
    spectral_radius: float | None = None,
    forget_bias: float | str | None = None,
    chrono_max: float | None = None,
) -> None:
    """Apply the init schemes to a single-layer fused ``nn.RNN``/``nn.LSTM``/``nn.GRU``."""
    num_gates = len(GATES[cell])
    for block in gate_blocks(layer.weight_hh_l0, num_gates):
        init_block_(block, recurrent, std)
        if spectral_radius is not None:
            rescale_spectral_radius_(block, spectral_radius)
    for block in gate_blocks(layer.weight_ih_l0, num_gates):
        init_block_(block, input, std)
    if layer.bias and bias == "zeros":
        layer.bias_ih_l0.zero_()
        layer.bias_hh_l0.zero_()
    if cell == "lstm" and forget_bias is not None and layer.bias:
        hidden = layer.hidden_size
        if forget_bias == "chrono":
            chrono_bias_(layer, chrono_max)
            return
        layer.bias_ih_l0[hidden : 2 * hidden] = forget_bias
        layer.bias_hh_l0[hidden : 2 * hidden] = 0.0


@torch.no_grad()
def chrono_bias_(layer: nn.LSTM, chrono_max: float | None) -> None:
    """Chrono initialisation of a single-layer LSTM's input and forget biases (module docstring)."""
    if chrono_max is None or not chrono_max > 2:
        raise ValueError(
            f"model.init.chrono_max={chrono_max!r}: expected a number > 2 (T_max of chrono init)"
        )
    hidden = layer.hidden_size
    forget = torch.empty(hidden, dtype=torch.float64).uniform_(1.0, chrono_max - 1.0).log_()
    layer.bias_ih_l0[hidden : 2 * hidden] = forget
    layer.bias_hh_l0[hidden : 2 * hidden] = 0.0
    layer.bias_ih_l0[:hidden] = -forget
    layer.bias_hh_l0[:hidden] = 0.0
