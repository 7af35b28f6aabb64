"""The gradient-flow probe against independent references.

* an unrolled autograd loop in float64 (tests/reference_cells.py), whose per-step states'
  ``.grad`` are the total ∂L/∂h_t and ∂L/∂c_t by definition;
* the closed form of a linear recurrence ``h_t = ρ P h_{t-1} + …`` (P a permutation,
  hence orthogonal), where ‖∂L/∂h_t‖ = ρ^{T-1-t} ‖∂L/∂h_{T-1}‖ exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
from reference_cells import UnrolledReference
from torch import nn

from rnnflow.models import RecurrentNet
from rnnflow.probes import gradient_flow
from rnnflow.probes.gradient_flow import GradientFlowProbe, probed_layer_call, total_hidden_gradients
from rnnflow.probes.profile_stats import decay_rate, log10_ratio

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("rnn", "sigmoid"), ("lstm", "tanh"), ("gru", "tanh")]


def _loss(outputs: torch.Tensor) -> torch.Tensor:
    weights = torch.linspace(-1.0, 2.0, outputs.numel(), dtype=outputs.dtype).view_as(outputs)
    return (outputs * weights).sum() + 0.5 * outputs.square().sum()


def _net(cell: str, nonlinearity: str, layers: int, readout: str, **kwargs) -> RecurrentNet:
    torch.manual_seed(1)
    return RecurrentNet(cell, 3, 7, layers, 2, readout=readout, nonlinearity=nonlinearity, **kwargs).double()


def _run(net: RecurrentNet, inputs: torch.Tensor, layer_call) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Forward and backward, through ``layer_call``, or with the probe ``layer_call`` attached."""
    net.zero_grad()
    if isinstance(layer_call, GradientFlowProbe):
        with layer_call.attach(net):
            outputs = net(inputs)
    else:
        outputs = net(inputs, layer_call=layer_call)
    _loss(outputs).backward()
    return outputs.detach(), [p.grad.clone() for p in net.parameters()]


ROUTES = ["extra_input", "adjoint"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("cell,nonlinearity", CELLS)
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("readout", ["last", "all"])
def test_total_hidden_gradient_matches_unrolled_reference(route, cell, nonlinearity, layers, readout):
    net = _net(cell, nonlinearity, layers, readout)
    inputs = torch.randn(4, 13, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    reference = UnrolledReference()
    _run(net, inputs, reference.layer_call)
    records = {}

    def probed(index, layer, x, state):
        hidden, final, records[index] = probed_layer_call(layer, x, state, route)
        return hidden, final

    _run(net, inputs, probed)
    for index in range(layers):
        dh, dc = total_hidden_gradients(records[index])
        expected = reference.hidden_grads(index)
        assert expected.abs().max() > 0
        torch.testing.assert_close(dh, expected, rtol=1e-10, atol=1e-13)
        if cell == "lstm":
            torch.testing.assert_close(dc, reference.cell_grads(index), rtol=1e-10, atol=1e-13)
        else:
            assert dc is None


@pytest.mark.parametrize("block_steps", [1, 3, 5])
def test_lstm_cell_gradient_across_blocks(monkeypatch, block_steps):
    """The LSTM's ∂L/∂c pass runs in blocks of steps from the end; its scan crosses every block edge."""
    net = _net("lstm", "tanh", 2, "all")
    inputs = torch.randn(4, 13, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(gradient_flow, "_BLOCK_ELEMENTS", block_steps * 4 * 7)  # B = 4, H = 7
    reference = UnrolledReference()
    _run(net, inputs, reference.layer_call)
    records = {}

    def probed(index, layer, x, state):
        hidden, final, records[index] = probed_layer_call(layer, x, state, "extra_input")
        return hidden, final

    _run(net, inputs, probed)
    for index in range(2):
        dh, dc = total_hidden_gradients(records[index])
        torch.testing.assert_close(dh, reference.hidden_grads(index), rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(dc, reference.cell_grads(index), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("cell,nonlinearity", CELLS)
def test_residual_and_layer_norm_paths_are_included(route, cell, nonlinearity):
    net = _net(cell, nonlinearity, 3, "all", residual=True, layer_norm=True)
    inputs = torch.randn(3, 9, 3, dtype=torch.float64)
    reference = UnrolledReference()
    _run(net, inputs, reference.layer_call)
    probe = GradientFlowProbe(route=route)
    _run(net, inputs, probe)
    for index, flow in enumerate(probe.gradient_flow().values()):
        expected = reference.hidden_grads(index).square().sum(dim=(1, 2)).sqrt()
        torch.testing.assert_close(flow.hidden, expected, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("cell,nonlinearity", CELLS)
def test_second_chunk_from_a_carried_state(route, cell, nonlinearity):
    """Truncated BPTT: a chunk that starts from the previous chunk's (detached) final state."""
    net = _net(cell, nonlinearity, 2, "all")
    inputs = torch.randn(3, 16, 3, dtype=torch.float64)
    first, second = inputs.split(8, dim=1)
    _, states = net(first, return_states=True)
    states = [tuple(s.detach() for s in st) if isinstance(st, tuple) else st.detach() for st in states]
    reference = UnrolledReference()
    _loss(net(second, layer_call=reference.layer_call, states=states)).backward()
    probe = GradientFlowProbe(route=route)
    with probe.attach(net):
        _loss(net(second, states=states)).backward()
    for index, flow in enumerate(probe.gradient_flow().values()):
        expected = reference.hidden_grads(index).square().sum(dim=(1, 2)).sqrt()
        torch.testing.assert_close(flow.hidden, expected, rtol=1e-10, atol=1e-13)
        if cell == "lstm":
            expected_cell = reference.cell_grads(index).square().sum(dim=(1, 2)).sqrt()
            torch.testing.assert_close(flow.cell, expected_cell, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("layer_type", [nn.RNN, nn.LSTM, nn.GRU])
def test_time_major_layers(route, layer_type):
    """``batch_first=False``: (T, B, I) in, (T, B, H) out."""
    torch.manual_seed(3)
    layer = layer_type(3, 5, batch_first=False).double()
    inputs = torch.randn(11, 4, 3, dtype=torch.float64)
    reference = UnrolledReference()
    _loss(reference.layer_call(0, layer, inputs)[0]).backward()
    hidden, _, record = probed_layer_call(layer, inputs, route=route)
    _loss(hidden).backward()
    dh, _ = total_hidden_gradients(record)
    torch.testing.assert_close(dh, reference.hidden_grads(0), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("cell,nonlinearity", CELLS)
@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_probing_does_not_change_outputs_or_parameter_gradients(route, cell, nonlinearity, dtype, tolerance):
    net = _net(cell, nonlinearity, 2, "last").to(dtype)
    inputs = torch.randn(8, 30, 3, dtype=dtype)
    plain_out, plain_grads = _run(net, inputs, None)
    probe = GradientFlowProbe(route=route)
    probed_out, probed_grads = _run(net, inputs, probe)
    torch.testing.assert_close(probed_out, plain_out, rtol=tolerance, atol=tolerance)
    for plain, probed in zip(plain_grads, probed_grads, strict=True):
        torch.testing.assert_close(probed, plain, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("rho", [0.9, 1.0, 1.1])
def test_linear_recurrence_closed_form(route, rho):
    """ReLU RNN kept in its linear regime: W = ρ·P (P a cyclic permutation), inputs and bias > 0.

    Then h_t = ρ P h_{t-1} + (W_ih x_t + b) with every pre-activation positive, so
    ∂L/∂h_{t-1} = ρ Pᵀ ∂L/∂h_t and ‖∂L/∂h_t‖ = ρ^{T-1-t} ‖∂L/∂h_{T-1}‖ for a loss on h_{T-1}.
    """
    steps, hidden = 101, 6
    layer = nn.RNN(2, hidden, nonlinearity="relu", batch_first=True).double()
    with torch.no_grad():
        layer.weight_hh_l0.copy_(rho * torch.roll(torch.eye(hidden, dtype=torch.float64), 1, dims=0))
        layer.weight_ih_l0.uniform_(0.1, 1.0)
        layer.bias_ih_l0.fill_(0.5)
        layer.bias_hh_l0.zero_()
    inputs = torch.rand(4, steps, 2, dtype=torch.float64)
    hidden_states, _, record = probed_layer_call(layer, inputs, route=route)
    assert bool((hidden_states > 0).all())
    hidden_states[:, -1].sum().backward()
    dh, _ = total_hidden_gradients(record)
    profile = dh.square().sum(dim=(1, 2)).sqrt()
    expected = profile[-1] * rho ** torch.arange(steps - 1, -1, -1, dtype=torch.float64)
    torch.testing.assert_close(profile, expected, rtol=1e-12, atol=0)
    assert float(decay_rate(profile)) == pytest.approx(rho, rel=1e-12)
    assert float(log10_ratio(profile)) == pytest.approx(100 * math.log10(rho), abs=1e-10)
    ratio = float(profile[0] / profile[-1])
    assert ratio == pytest.approx({0.9: 2.6561e-5, 1.0: 1.0, 1.1: 1.3781e4}[rho], rel=1e-4)


@pytest.mark.parametrize("route", ROUTES)
def test_loss_scale_is_divided_out(route):
    layer = nn.LSTM(3, 4, batch_first=True).double()
    inputs = torch.randn(2, 6, 3, dtype=torch.float64)
    hidden, _, record = probed_layer_call(layer, inputs, route=route)
    (1024.0 * hidden.sum()).backward()
    scaled, scaled_cell = total_hidden_gradients(record, grad_scale=1024.0)
    hidden, _, record = probed_layer_call(layer, inputs, route=route)
    hidden.sum().backward()
    plain, plain_cell = total_hidden_gradients(record)
    torch.testing.assert_close(scaled, plain)
    torch.testing.assert_close(scaled_cell, plain_cell)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("block_steps", [1, 3])
def test_adjoint_across_blocks(monkeypatch, cell, block_steps):
    """The adjoint's precomputations run in blocks of steps; its results cross every block edge."""
    from rnnflow.probes import adjoint

    net = _net(cell, "tanh", 2, "all")
    inputs = torch.randn(4, 13, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    monkeypatch.setattr(adjoint, "_BLOCK_ELEMENTS", block_steps * 4 * gates * 7)  # B = 4, H = 7
    reference = UnrolledReference()
    _, reference_grads = _run(net, inputs, reference.layer_call)
    probe = GradientFlowProbe(route="adjoint")
    _, probe_grads = _run(net, inputs, probe)
    for index, flow in enumerate(probe.gradient_flow().values()):
        expected = reference.hidden_grads(index).square().sum(dim=(1, 2)).sqrt()
        torch.testing.assert_close(flow.hidden, expected, rtol=1e-10, atol=1e-13)
    for got, expected in zip(probe_grads, reference_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("layer_type", [nn.RNN, nn.LSTM, nn.GRU])
def test_loss_on_the_final_state(route, layer_type):
    """A loss that reads the returned final state (h_n, and c_n for the LSTM) as well as the outputs:
    the gradient entering through the final state is part of ∂L/∂h_{T-1} (and ∂L/∂c_{T-1})."""
    torch.manual_seed(6)
    layer = layer_type(3, 5, batch_first=True).double()
    inputs = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    lstm = layer_type is nn.LSTM

    def final_loss(final: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        h_n, c_n = final if lstm else (final, None)
        weights = torch.linspace(-2.0, 1.0, h_n.numel(), dtype=torch.float64).view_as(h_n)
        return (h_n * weights).sum() + (0.0 if c_n is None else (c_n * weights.flip(-1)).sum() ** 2)

    reference = UnrolledReference()
    outputs, _ = reference.layer_call(0, layer, inputs)
    last_hidden = reference.hidden[0][-1].unsqueeze(0)
    final = (last_hidden, reference.cell[0][-1].unsqueeze(0)) if lstm else last_hidden
    (_loss(outputs) + final_loss(final)).backward()
    expected_input_grad, inputs.grad = inputs.grad.clone(), None
    hidden, final, record = probed_layer_call(layer, inputs, route=route)
    (_loss(hidden) + final_loss(final)).backward()
    dh, dc = total_hidden_gradients(record)
    torch.testing.assert_close(dh, reference.hidden_grads(0), rtol=1e-10, atol=1e-13)
    if lstm:
        torch.testing.assert_close(dc, reference.cell_grads(0), rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(inputs.grad, expected_input_grad, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("layer_type", [nn.RNN, nn.LSTM, nn.GRU])
def test_no_gradient_reaches_the_layer(route, layer_type):
    """A layer call whose outputs no loss reads: its gradients are exactly zero, not missing."""
    layer = layer_type(3, 5, batch_first=True).double()
    inputs = torch.randn(2, 6, 3, dtype=torch.float64)
    hidden, _, record = probed_layer_call(layer, inputs, route=route)
    (layer.weight_hh_l0.sum() * 0.0).backward()
    dh, dc = total_hidden_gradients(record)
    assert dh.shape == (6, 2, 5) and bool((dh == 0).all())
    if layer_type is nn.LSTM:
        assert dc.shape == (6, 2, 5) and bool((dc == 0).all())
