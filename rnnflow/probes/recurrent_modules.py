"""Finding the recurrent modules of any model, naming their layers, and running them layer by layer.

A fused ``nn.RNN``/``nn.LSTM``/``nn.GRU`` with ``num_layers = L`` and ``D`` directions computes, for
layer ``l`` and direction ``d`` (``d = 1`` reads the sequence backwards), time-major:

    x^0 = input (T, B, I);   u^{l,d} = Cell(x^l, W^{l,d}) (T, B, H);
    x^{l+1} = dropout([u^{l,0} | u^{l,1}])  (T, B, D·H)   (dropout only in training, between layers)

:func:`run_layer_by_layer` runs exactly this as ``L·D`` single-layer fused calls, each through a
caller-given ``call(spec, inputs, state) -> (u, final)`` (the probe's), and returns what the module
returns: ``(output, h_n)`` or ``(output, (h_n, c_n))``, ``h_n`` ``(L·D, B, H)``. In eval mode it is the
module's own computation; in training mode the dropout masks between layers are drawn with
``torch.nn.functional.dropout`` instead of inside the kernel (same distribution, another stream).

Layer names (the ``L`` of ``grad_flow/L/...``): a multi-layer module ``m`` has layers ``m/layer0``,
``m/layer1``, …, and ``m/layer0_reverse`` for the backward direction; a ``ModuleList`` ``s`` of
single-layer unidirectional modules is a stack, its items ``s/layer0``, ``s/layer1``, … (rnnflow's
``RecurrentNet``). :func:`short_names` drops the module prefix where the model has a single stack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from rnnflow.models.fused import KERNEL_OF_MODE, FusedSpec, SigmoidRNN, State, fused_spec

RECURRENT_TYPES = (nn.RNNBase, SigmoidRNN)
LayerCall = Callable[["LayerKey", FusedSpec, torch.Tensor, State | None], tuple[torch.Tensor, State]]


def find_recurrent_modules(model: nn.Module) -> dict[str, nn.Module]:
    """``{qualified name: module}`` of every ``nn.RNN``/``nn.LSTM``/``nn.GRU``/``SigmoidRNN`` in ``model``.

    ``model`` itself, when it is one, is named by its class (``"lstm"`` for an ``nn.LSTM``).
    """
    found = {
        name or type(module).__name__.lower(): module
        for name, module in model.named_modules()
        if isinstance(module, RECURRENT_TYPES)
    }
    for name, module in found.items():
        if isinstance(module, nn.LSTM) and module.proj_size:
            raise TypeError(f"rnnflow: {name} is an LSTM with proj_size > 0: not supported by the probe")
    return found


@dataclass(frozen=True)
class LayerKey:
    """One (layer, direction) of one recurrent module, and its name."""

    module: str  # qualified name of the module
    layer: int
    reverse: bool
    name: str  # e.g. "encoder.rnn/layer1_reverse" or "layers/layer2"


def layer_keys(modules: dict[str, nn.Module]) -> dict[str, list[LayerKey]]:
    """Per module name, the keys of its layers (layer-major, forward direction first)."""
    stacks = _stacks(modules)
    keys: dict[str, list[LayerKey]] = {}
    for name, module in modules.items():
        if name in stacks:
            stack, index = stacks[name]
            keys[name] = [LayerKey(name, 0, False, f"{stack}/layer{index}")]
            continue
        directions = 2 if getattr(module, "bidirectional", False) else 1
        keys[name] = [
            LayerKey(name, layer, bool(d), f"{name}/layer{layer}" + ("_reverse" if d else ""))
            for layer in range(module.num_layers)
            for d in range(directions)
        ]
    return keys


def _stacks(modules: dict[str, nn.Module]) -> dict[str, tuple[str, int]]:
    """Single-layer unidirectional modules named ``<list>.<i>``: ``{name: (<list>, i)}``."""
    stacks: dict[str, tuple[str, int]] = {}
    for name, module in modules.items():
        parent, _, index = name.rpartition(".")
        single = module.num_layers == 1 and not getattr(module, "bidirectional", False)
        if single and index.isdigit():
            stacks[name] = (parent, int(index))
    return stacks


def short_names(keys: dict[str, list[LayerKey]]) -> dict[str, str]:
    """Full layer name → tag name: ``layer0`` … when all layers share one prefix, else the full name."""
    names = [key.name for module_keys in keys.values() for key in module_keys]
    prefixes = {name.rpartition("/")[0] for name in names}
    if len(prefixes) == 1:
        return {name: name.rpartition("/")[2] for name in names}
    return {name: name for name in names}


def layer_spec(module: nn.Module, layer: int = 0, reverse: bool = False) -> FusedSpec:
    """The single-layer fused call of ``module``'s layer ``layer`` (and direction): a :class:`FusedSpec`."""
    if isinstance(module, SigmoidRNN):
        return replace(fused_spec(module), batch_first=False)
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if module.bias else [])
    weights = [getattr(module, name + suffix) for name in names]
    return FusedSpec(KERNEL_OF_MODE[module.mode], weights, module.hidden_size, False, module.training)


def run_layer_by_layer(
    module: nn.Module, inputs: torch.Tensor, hx: State | None, call: LayerCall, keys: list[LayerKey]
) -> tuple[torch.Tensor, State]:
    """``module(inputs, hx)`` as single-layer fused calls through ``call`` (see the module docstring).

    ``call(key, spec, x, state)`` gets the layer's key, its single-layer spec, time-major ``x``
    ``(T, B, ·)`` (flipped in time for a reverse direction) and its state ``(1, B, H)`` (LSTM:
    ``(h, c)``; None for the module's initial state); it returns time-major ``u`` and the final state.
    ``keys`` are the module's layer keys of :func:`layer_keys`, in call order.
    """
    if isinstance(inputs, PackedSequence):
        raise TypeError(
            "rnnflow: the gradient-flow probe does not support PackedSequence inputs; pad the batch "
            "(torch.nn.utils.rnn.pad_packed_sequence) or probe a model that takes padded tensors"
        )
    unbatched = inputs.dim() == 2
    batch_first = getattr(module, "batch_first", False) and not unbatched
    x = inputs.unsqueeze(1) if unbatched else (inputs.transpose(0, 1) if batch_first else inputs)
    is_lstm = getattr(module, "mode", "") == "LSTM"
    h0, c0 = _split_state(hx, unbatched, is_lstm)
    directions = 2 if getattr(module, "bidirectional", False) else 1
    finals_h: list[torch.Tensor] = []
    finals_c: list[torch.Tensor] = []
    key_iter: Iterator[LayerKey] = iter(keys)
    num_layers = getattr(module, "num_layers", 1)
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            key = next(key_iter)
            index = layer * directions + direction
            state = _layer_state(h0, c0, index, is_lstm)
            layer_input = x.flip(0) if key.reverse else x
            u, final = call(key, layer_spec(module, layer, key.reverse), layer_input, state)
            outputs.append(u.flip(0) if key.reverse else u)
            if is_lstm:
                finals_h.append(final[0])
                finals_c.append(final[1])
            else:
                finals_h.append(final)
        x = outputs[0] if directions == 1 else torch.cat(outputs, dim=-1)
        dropout = getattr(module, "dropout", 0.0)
        if dropout and module.training and layer < num_layers - 1:
            x = nn.functional.dropout(x, dropout, training=True)
    output = x.squeeze(1) if unbatched else (x.transpose(0, 1) if batch_first else x)
    h_n = torch.cat(finals_h, dim=0)
    if unbatched:
        h_n = h_n.squeeze(1)
    if not is_lstm:
        return output, h_n
    c_n = torch.cat(finals_c, dim=0)
    return output, (h_n, c_n.squeeze(1) if unbatched else c_n)


def _split_state(
    hx: State | None, unbatched: bool, is_lstm: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if hx is None:
        return None, None
    h0, c0 = hx if is_lstm else (hx, None)
    if unbatched:
        h0 = h0.unsqueeze(1)
        c0 = None if c0 is None else c0.unsqueeze(1)
    return h0, c0


def _layer_state(h0: torch.Tensor | None, c0: torch.Tensor | None, index: int, is_lstm: bool) -> State | None:
    if h0 is None:
        return None
    h = h0[index : index + 1]
    return (h, c0[index : index + 1]) if is_lstm else h


def named_layers(modules: dict[str, nn.Module], short: bool = True) -> dict[str, tuple[nn.Module, LayerKey]]:
    """``{layer name: (module, key)}`` of every (layer, direction); tag names if ``short``."""
    keys = layer_keys(modules)
    rename = short_names(keys) if short else {}
    return {
        rename.get(key.name, key.name): (modules[name], key)
        for name, module_keys in keys.items()
        for key in module_keys
    }


def recurrent_weight(module: nn.Module, key: LayerKey) -> torch.Tensor:
    """The layer's recurrent weight ``W_hh`` as the module holds it, ``(G·H, H)``."""
    return getattr(module, f"weight_hh_l{key.layer}" + ("_reverse" if key.reverse else ""))


def cell_of(module: nn.Module) -> str:
    """``rnn``, ``lstm`` or ``gru``."""
    if isinstance(module, SigmoidRNN):
        return "rnn"
    return {"RNN_TANH": "rnn", "RNN_RELU": "rnn", "LSTM": "lstm", "GRU": "gru"}[module.mode]
