"""rnnflow on models it did not build: any nn.RNN/LSTM/GRU, plain PyTorch or Lightning.

The probe is checked against an unrolled float64 reference that only reads the module's weights
(:func:`reference_cells.unrolled_module`): every layer and direction, ``batch_first`` either way,
2 layers with dropout (eval mode), a loss that reads both the output and the final states.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from reference_cells import grads_of, unrolled_module
from torch import nn

import rnnflow
from rnnflow.probes.recurrent_modules import find_recurrent_modules, layer_keys, short_names

CELL_TYPES = [nn.RNN, nn.LSTM, nn.GRU]


def _loss(output: torch.Tensor, final, head: nn.Module) -> torch.Tensor:
    """Reads the output and the final states (h_n, and c_n for the LSTM)."""
    h_n, c_n = final if isinstance(final, tuple) else (final, None)
    loss = head(output).pow(2).sum() + 0.7 * h_n[-1].sum()
    return loss if c_n is None else loss + c_n[0].sum()


@pytest.mark.parametrize("route", ["auto", "extra_input", "adjoint"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cell", CELL_TYPES)
def test_every_layer_and_direction_matches_the_unrolled_reference(cell, batch_first, bidirectional, route):
    torch.manual_seed(0)
    module = cell(3, 5, num_layers=2, batch_first=batch_first, bidirectional=bidirectional, dropout=0.3)
    module = module.double().eval()
    head = nn.Linear(5 * (2 if bidirectional else 1), 1).double()
    shape = (4, 9, 3) if batch_first else (9, 4, 3)
    x = torch.randn(*shape, dtype=torch.float64)
    output, final, hidden, cell_states = unrolled_module(module, x)
    _loss(output, final, head).backward()
    with rnnflow.gradient_flow(module, modules={"rnn": module}, route=route) as flow:
        probed_output, probed_final = module(x)
        _loss(probed_output, probed_final, head).backward()
    torch.testing.assert_close(probed_output, output, rtol=1e-12, atol=1e-12)
    assert sorted(flow.profiles) == sorted(hidden)
    for name, states in hidden.items():
        expected = torch.linalg.vector_norm(grads_of(states), dim=(1, 2))
        assert expected.min() > 0
        torch.testing.assert_close(flow.profiles[name], expected, rtol=1e-10, atol=0)
        if cell is nn.LSTM:
            expected_cell = torch.linalg.vector_norm(grads_of(cell_states[name]), dim=(1, 2))
            torch.testing.assert_close(flow.cell_profiles[name], expected_cell, rtol=1e-10, atol=0)


@pytest.mark.parametrize("cell", CELL_TYPES)
def test_parameter_gradients_and_outputs_are_the_fused_ones(cell):
    """float32: the probe changes the parameter gradients only by float rounding of the input GEMM.

    Measured on CPU (torch 2.13): outputs are bit-identical; RNN and GRU input weights (a wider
    GEMM) and reverse directions (the time sum in the other order) differ by about 1e-6 of the
    largest entry; a unidirectional LSTM (oneDNN) is bit-identical.
    """
    torch.manual_seed(0)
    module = cell(3, 32, num_layers=2, batch_first=True, bidirectional=True).eval()
    head = nn.Linear(64, 1)
    x = torch.randn(16, 40, 3)

    def gradients(probed: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        module.zero_grad(), head.zero_grad()
        with rnnflow.gradient_flow(module) if probed else torch.enable_grad():
            output, final = module(x)
            _loss(output, final, head).backward()
        return output.detach(), [p.grad.clone() for p in [*module.parameters(), *head.parameters()]]

    plain_output, plain = gradients(False)
    probed_output, probed = gradients(True)
    torch.testing.assert_close(probed_output, plain_output, rtol=1e-6, atol=1e-7)
    for expected, got in zip(plain, probed, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=4e-6 * float(expected.abs().max()))


def test_unidirectional_lstm_parameter_gradients_are_bit_identical():
    """With the extra-input route (fused forward and backward; ``auto``'s choice for the LSTM) a
    unidirectional LSTM's outputs and gradients are bit-identical; the adjoint route (whose LSTM
    forward is its own loop) equals them up to float rounding."""
    torch.manual_seed(0)
    module = nn.LSTM(3, 32, num_layers=2, batch_first=True)
    x = torch.randn(16, 40, 3)

    def gradients(route: str | None) -> list[torch.Tensor]:
        module.zero_grad()
        with rnnflow.gradient_flow(module, route=route) if route else torch.enable_grad():
            output = module(x)[0]
            output.pow(2).mean().backward()
        return [output.detach(), *(p.grad.clone() for p in module.parameters())]

    plain = gradients(None)
    assert all(torch.equal(a, b) for a, b in zip(plain, gradients("extra_input"), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(plain, gradients("auto"), strict=True))
    for expected, got in zip(plain, gradients("adjoint"), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=2e-6 * float(expected.abs().max()))


def test_layer_names():
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Module()
            self.encoder.rnn = nn.GRU(2, 3, num_layers=2, bidirectional=True)
            self.stack = nn.ModuleList([nn.LSTM(2, 3), nn.LSTM(3, 3)])

    keys = layer_keys(find_recurrent_modules(Model()))
    full = [key.name for module_keys in keys.values() for key in module_keys]
    assert full == [
        "encoder.rnn/layer0",
        "encoder.rnn/layer0_reverse",
        "encoder.rnn/layer1",
        "encoder.rnn/layer1_reverse",
        "stack/layer0",
        "stack/layer1",
    ]
    assert short_names(keys) == {name: name for name in full}  # two stacks: the module names stay
    single = layer_keys({"rnn": nn.RNN(2, 3, num_layers=3)})
    assert list(short_names(single).values()) == ["layer0", "layer1", "layer2"]


def test_unsupported_inputs_are_refused_in_one_line():
    module = nn.GRU(2, 3, batch_first=True)
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(2, 4, 2), [4, 2], batch_first=True)
    with pytest.raises(TypeError, match="PackedSequence"), rnnflow.gradient_flow(module):
        module(packed)
    with pytest.raises(TypeError, match="proj_size"):
        rnnflow.gradient_flow(nn.LSTM(2, 4, proj_size=2)).__enter__()


def test_unbatched_input_and_no_grad_calls():
    torch.manual_seed(0)
    module = nn.RNN(2, 3)
    x = torch.randn(6, 2)
    expected = module(x)[0]
    with rnnflow.gradient_flow(module) as flow:
        with torch.no_grad():
            assert torch.allclose(module(x)[0], expected)  # runs the module as it is
        module(x)[0].sum().backward()
    assert flow.profiles["rnn/layer0"].shape == (6,)
    assert "forward" not in vars(module)  # detached again


@pytest.mark.parametrize("script", ["plain_pytorch.py", "lightning_model.py"])
def test_examples_run(tmp_path, script):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    if script == "lightning_model.py":
        header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
        for column in ("grad_flow/layer0/log10_ratio", "spectral/layer0/z/radius", "clip/events"):
            assert column in header
    else:
        assert "encoder/layer1_reverse" in result.stdout
