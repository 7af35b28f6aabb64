"""Initialisation schemes, per gate block, against their definitions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rnnflow.models import GATES, RecurrentNet, SigmoidRNN, initialise_recurrent_layer_

LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def blocks(weight, cell):
    return weight.detach().double().chunk(len(GATES[cell]), dim=0)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("radius", [0.5, 1.0, 1.7])
@pytest.mark.parametrize("scheme", ["default", "normal", "orthogonal", "xavier"])
def test_spectral_radius_is_exact_for_every_gate(cell, radius, scheme):
    torch.manual_seed(0)
    layer = LAYERS[cell](5, 24, batch_first=True)
    initialise_recurrent_layer_(layer, cell, recurrent=scheme, spectral_radius=radius)
    for block in blocks(layer.weight_hh_l0, cell):
        assert torch.linalg.eigvals(block).abs().max().item() == pytest.approx(radius, rel=1e-5)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_orthogonal_identity_zeros(cell):
    layer = LAYERS[cell](5, 16)
    initialise_recurrent_layer_(layer, cell, recurrent="orthogonal", input="zeros", bias="zeros")
    for block in blocks(layer.weight_hh_l0, cell):
        torch.testing.assert_close(block @ block.T, torch.eye(16, dtype=torch.float64), atol=1e-5, rtol=0)
    assert not layer.weight_ih_l0.any() and not layer.bias_ih_l0.any() and not layer.bias_hh_l0.any()
    initialise_recurrent_layer_(layer, cell, recurrent="identity")
    for block in blocks(layer.weight_hh_l0, cell):
        assert torch.equal(block, torch.eye(16, dtype=torch.float64))


def test_forget_bias_sets_the_total_forget_gate_bias():
    layer = nn.LSTM(3, 8)
    initialise_recurrent_layer_(layer, "lstm", forget_bias=2.5)
    total = layer.bias_ih_l0 + layer.bias_hh_l0
    assert torch.allclose(total[8:16], torch.full((8,), 2.5))


@pytest.mark.parametrize(
    "scheme,expected_std",
    [("normal", 1 / math.sqrt(256)), ("kaiming", math.sqrt(2 / 256)), ("xavier", math.sqrt(2 / 512))],
)
def test_scheme_standard_deviations(scheme, expected_std):
    torch.manual_seed(0)
    layer = nn.RNN(256, 256)
    initialise_recurrent_layer_(layer, "rnn", recurrent=scheme, input=scheme)
    for weight in (layer.weight_hh_l0, layer.weight_ih_l0):
        assert weight.std().item() == pytest.approx(expected_std, rel=0.03)


def test_normal_std_and_model_wiring():
    net = RecurrentNet("rnn", 3, 64, 2, 1, nonlinearity="sigmoid", init={"recurrent": "normal", "std": 1.0})
    assert all(isinstance(layer, SigmoidRNN) for layer in net.layers)
    assert net.layers[1].weight_hh_l0.std().item() == pytest.approx(1.0, rel=0.05)


def test_chrono_init_draws_log_uniform_forget_bias_and_opposite_input_bias():
    torch.manual_seed(0)
    layer = nn.LSTM(3, 4000)
    initialise_recurrent_layer_(layer, "lstm", forget_bias="chrono", chrono_max=101)
    total = (layer.bias_ih_l0 + layer.bias_hh_l0).detach().double()
    forget, input_gate = total[4000:8000], total[:4000]
    torch.testing.assert_close(input_gate, -forget)
    # b_f = ln u, u ~ U(1, 100): exp(b_f) uniform on [1, 100] (mean 50.5, std 99/√12).
    u = forget.exp()
    assert float(u.min()) >= 1.0 - 1e-5 and float(u.max()) <= 100.0 + 1e-3
    assert float(u.mean()) == pytest.approx(50.5, rel=0.03)
    assert float(u.std()) == pytest.approx(99 / math.sqrt(12), rel=0.03)
    others = total[8000:]  # g and o keep PyTorch's default biases
    assert float(others.abs().max()) <= 2 / math.sqrt(4000) + 1e-6


def test_chrono_max_defaults_to_task_seq_len():
    from conftest import compose_config

    from rnnflow.runtime.build import build_model, build_task_from_config

    torch.manual_seed(0)
    cfg = compose_config(
        "model=lstm", "model.hidden_size=512", "model.init.forget_bias=chrono", "task.seq_len=30"
    )
    model = build_model(cfg, build_task_from_config(cfg))
    layer = model.layers[0]
    forget = (layer.bias_ih_l0 + layer.bias_hh_l0)[512:1024].detach().double().exp()
    assert float(forget.max()) <= 29.0 + 1e-4 and float(forget.max()) > 25.0
