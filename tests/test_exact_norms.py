"""Per-step gradient norms exact down to float32's floor, and exactly-zero steps reported as such.

References independent of the probe: Python's ``math.hypot`` (correctly scaled, any magnitude)
on the stored entries; an unrolled float64 autograd loop (tests/reference_cells.py) for the
true ‖∂L/∂h_t‖ of a float32 model; closed forms (``W = ρ·Q``, the shift matrix).
"""

from __future__ import annotations

import copy
import math
import subprocess

import pytest
import torch
from conftest import ROOT, read_scalars
from reference_cells import UnrolledReference

from rnnflow.models import RecurrentNet
from rnnflow.models.fused import fused_spec
from rnnflow.probes import gradient_flow
from rnnflow.probes.gradient_flow import GradientFlowProbe, _scaled_frobenius_per_step, frobenius_per_step
from rnnflow.probes.profile_stats import (
    decay_rate,
    horizon,
    log10_ratio,
    recurrent_step_factors,
    zero_steps,
)
from rnnflow.tasks import AddingTask

FLOAT32_TINY = torch.finfo(torch.float32).tiny  # 1.18e-38, the smallest normal float32


def _flush_is_on() -> bool:
    return bool(torch.tensor(FLOAT32_TINY) / 4 == 0)


@pytest.fixture
def flush_denormal():
    """``flush_denormal(on)``: flush-to-zero for this test (skipped where unsupported), restored after."""
    was_on = _flush_is_on()

    def set_state(on: bool) -> None:
        if not torch.set_flush_denormal(on) and on:
            pytest.skip("this CPU has no flush-to-zero")

    yield set_state
    torch.set_flush_denormal(was_on)


def hypot_per_step(gradients: torch.Tensor) -> torch.Tensor:
    """``(T, …)`` → ``(T,)`` float64: ``math.hypot`` of each step's stored entries."""
    return torch.tensor(
        [math.hypot(*step.double().flatten().tolist()) for step in gradients], dtype=torch.float64
    )


def _entries(dtype: torch.dtype, magnitudes: list[float]) -> torch.Tensor:
    """``(len(magnitudes), 3, 5)``: step t holds signed values spread around ``magnitudes[t]``."""
    spread = torch.linspace(-1.7, 1.3, 15, dtype=torch.float64).view(3, 5)
    return torch.stack([m * spread for m in magnitudes]).to(dtype)


@pytest.mark.parametrize(
    "dtype,magnitudes",
    [
        (torch.float32, [1e-44, 1e-39, 1e-30, 1e-20, 1e-19, 1.0, 1e19, 1e30]),
        (torch.bfloat16, [1e-39, 1e-30, 1e-20, 1.0, 1e20, 1e37]),
        (torch.float16, [1e-7, 1e-5, 1e-3, 1.0, 1e3, 3e4]),
        (torch.float64, [1e-300, 1e-160, 1e-30, 1.0, 1e30, 1e160, 1e300]),
    ],
)
def test_norm_of_every_dtype_matches_hypot(flush_denormal, monkeypatch, dtype, magnitudes):
    """Squaring float32 entries loses everything below ~1e-19 and overflows above ~1e19: not here."""
    flush_denormal(False)
    monkeypatch.setattr(gradient_flow, "_NORM_BLOCK_ELEMENTS", 2 * 15)  # blocks of 2 steps: edges crossed
    gradients = torch.cat([_entries(dtype, magnitudes), torch.zeros(1, 3, 5, dtype=dtype)])
    expected = hypot_per_step(gradients)
    assert (expected[:-1] > 0).all()  # every magnitude is representable in the dtype
    for tensor in (gradients, gradients.transpose(1, 2)):  # contiguous or not
        norms = frobenius_per_step(tensor)
        assert norms.dtype == torch.float64
        torch.testing.assert_close(norms, expected, rtol=4e-16, atol=0)
    assert frobenius_per_step(gradients)[-1] == 0  # a zero step is exactly 0


def test_scaled_norm_without_float64(flush_denormal):
    """The path for devices without float64: scaled by each step's largest entry, float32 rounding."""
    flush_denormal(False)
    gradients = _entries(torch.float32, [1e-37, 1e-30, 1e-20, 1.0, 1e20, 1e30])
    norms = _scaled_frobenius_per_step(gradients)
    assert norms.dtype == torch.float32
    torch.testing.assert_close(norms.double(), hypot_per_step(gradients), rtol=5e-7, atol=0)
    special = torch.zeros(3, 2, 2)
    special[1, 0, 0], special[2, 1, 1] = math.inf, math.nan
    result = _scaled_frobenius_per_step(special)
    assert result[0] == 0 and result[1] == math.inf and math.isnan(result[2])


def test_norm_of_expanded_zeros_and_empty():
    zeros = torch.zeros(()).expand(4, 3, 2)  # what a layer that no loss reached hands over
    assert frobenius_per_step(zeros).tolist() == [0.0] * 4
    assert frobenius_per_step(torch.zeros(0, 3, 2)).shape == (0,)


def _probed_outputs(probe: GradientFlowProbe, net: RecurrentNet, inputs: torch.Tensor) -> torch.Tensor:
    with probe.attach(net, short_names=True):
        return net(inputs).squeeze(-1)


def _probe_vs_reference(
    cell: str, nonlinearity: str, steps: int, route: str, init: dict | None = None, hidden: int = 32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(probe ‖∂L/∂h_t‖, true ‖∂L/∂h_t‖, probe ‖∂L/∂c_t‖, true ‖∂L/∂c_t‖)``: a float32 model probed,
    against the unrolled float64 loop on a float64 copy of the same weights and batch."""
    torch.manual_seed(0)
    net = RecurrentNet(cell, 2, hidden, 1, 1, readout="last", nonlinearity=nonlinearity, init=init)
    batch = AddingTask(steps).generate(16, torch.Generator().manual_seed(0), torch.device("cpu"))
    reference = UnrolledReference()
    wide = copy.deepcopy(net).double()
    outputs = wide(batch.inputs.double(), layer_call=reference.layer_call).squeeze(-1)
    torch.nn.functional.mse_loss(outputs, batch.targets.double()).backward()
    probe = GradientFlowProbe(route=route)
    with probe.attach(net, short_names=True):
        outputs = net(batch.inputs).squeeze(-1)
    torch.nn.functional.mse_loss(outputs, batch.targets).backward()
    flow = probe.gradient_flow()["layer0"]
    true_cell = hypot_per_step(reference.cell_grads(0)) if cell == "lstm" else None
    return flow.hidden, hypot_per_step(reference.hidden_grads(0)), flow.cell, true_cell


DEEP = [
    # (cell, nonlinearity, T, init, decades the truth loses from T-1 back to 0, rtol of float32)
    ("rnn", "sigmoid", 30, None, 23, 1e-6),
    (
        "rnn",
        "tanh",
        100,
        {"recurrent": "orthogonal", "spectral_radius": 0.6, "input": "zeros", "bias": "zeros"},
        21,
        1e-6,
    ),
    ("gru", "tanh", 150, None, 30, 1e-6),
    ("lstm", "tanh", 40, {"forget_bias": -4.0}, 31, 2e-5),
]


@pytest.mark.parametrize("route", ["extra_input", "adjoint"])
@pytest.mark.parametrize("cell,nonlinearity,steps,init,decades,rtol", DEEP)
def test_deep_vanishing_matches_float64_reference(
    flush_denormal, route, cell, nonlinearity, steps, init, decades, rtol
):
    """20-30 decades down (below the 1e-18 where squared float32 entries used to read 0), every step."""
    flush_denormal(True)  # rnnflow's default: the floor is 1.2e-38 per entry, far below these
    hidden, true_hidden, cell_norms, true_cell = _probe_vs_reference(cell, nonlinearity, steps, route, init)
    true_ratio = math.log10(true_hidden[0] / true_hidden[-1])
    assert true_ratio < -decades
    assert zero_steps(hidden) == 0
    torch.testing.assert_close(hidden, true_hidden, rtol=rtol, atol=0)
    assert float(log10_ratio(hidden)) == pytest.approx(true_ratio, abs=1e-4)
    assert float(decay_rate(hidden)) == pytest.approx(float(decay_rate(true_hidden)), rel=1e-5)
    if cell == "lstm":
        assert math.log10(true_cell[0] / true_cell[-1]) < -decades
        assert zero_steps(cell_norms) == 0
        torch.testing.assert_close(cell_norms, true_cell, rtol=rtol, atol=0)


@pytest.mark.parametrize("flush", [True, False])
def test_float32_underflow_is_counted_as_zero_steps(flush_denormal, flush):
    """A sigmoid RNN at T = 60 loses 47 decades: its early steps are truly 0 in the float32 backward.

    Each step whose true largest entry is clearly below the floor (1.2e-38 with flush-to-zero, the
    smallest subnormal 1.4e-45 without) is exactly 0 and counted; each clearly above it is non-zero;
    the statistics are those of the non-zero span.
    """
    flush_denormal(flush)
    torch.manual_seed(0)
    net = RecurrentNet("rnn", 2, 32, 1, 1, readout="last", nonlinearity="sigmoid")
    batch = AddingTask(60).generate(16, torch.Generator().manual_seed(0), torch.device("cpu"))
    reference = UnrolledReference()
    wide = copy.deepcopy(net).double()
    loss = torch.nn.functional.mse_loss(
        wide(batch.inputs.double(), layer_call=reference.layer_call).squeeze(-1), batch.targets.double()
    )
    loss.backward()
    largest = reference.hidden_grads(0).abs().amax(dim=(1, 2))
    probe = GradientFlowProbe(route="extra_input")
    torch.nn.functional.mse_loss(_probed_outputs(probe, net, batch.inputs), batch.targets).backward()
    hidden = probe.gradient_flow()["layer0"].hidden
    floor = FLOAT32_TINY if flush else 2.0**-149
    below, above = largest < floor / 4, largest > 4 * floor
    assert below.sum() >= 3 and above.sum() >= 30
    assert (hidden[below] == 0).all() and (hidden[above] > 0).all()
    count = zero_steps(hidden)
    assert count == int((hidden == 0).sum()) and count >= int(below.sum())
    first = int(torch.nonzero(hidden).min())
    assert hidden[:first].eq(0).all()  # the zeros are the earliest steps
    assert float(log10_ratio(hidden)) == pytest.approx(math.log10(hidden[first] / hidden[-1]), rel=1e-12)
    assert math.isfinite(float(log10_ratio(hidden))) and math.isfinite(float(decay_rate(hidden)))


def test_closed_form_rho_q_logged_by_the_cli(tmp_path, python):
    """tanh RNN, W_hh = 0.6·Q, zero input weights and biases, T = 100: the recurrence stays at h = 0,
    where tanh' = 1, so ‖∂L/∂h_0‖ / ‖∂L/∂h_99‖ = 0.6^99 = 10^-21.96 exactly."""
    overrides = [
        "model=rnn",
        "model.init.recurrent=orthogonal",
        "model.init.spectral_radius=0.6",
        "model.init.input=zeros",
        "model.init.bias=zeros",
        "task.seq_len=100",
        "task.val_batches=1",
        "trainer.max_steps=1",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path}",
    ]
    result = subprocess.run(
        [python, "scripts/train.py", *overrides], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    tags = read_scalars(tmp_path)
    assert tags["grad_flow/layer0/log10_ratio"][0][1] == pytest.approx(99 * math.log10(0.6), abs=0.01)
    assert tags["grad_flow/layer0/decay_rate"][0][1] == pytest.approx(0.6, rel=1e-5)
    assert tags["grad_flow/layer0/zero_steps"][0][1] == 0
    # 0.6^k ≥ 1e-3  ⇔  k ≤ ln(1e-3)/ln(0.6) = 13.5
    assert tags["grad_flow/layer0/horizon"][0][1] == 13
    log_norm_0 = tags["grad_flow/layer0/profile_log10/t0000"][0][1]
    log_norm_99 = tags["grad_flow/layer0/profile_log10/t0099"][0][1]
    assert log_norm_0 - log_norm_99 == pytest.approx(99 * math.log10(0.6), abs=1e-5)


def _shift_plus_identity(hidden: int) -> torch.Tensor:
    """``0.5·I + 2·S``, S the down-shift: ρ = 0.5 (triangular), ‖·‖₂ → 2.5 as H grows."""
    return 0.5 * torch.eye(hidden) + 2.0 * torch.diag(torch.ones(hidden - 1), -1)


def test_non_normal_recurrence_bounded_by_norm_not_radius():
    """ρ bounds nothing over a finite horizon: with W_hh = 0.5·I + 2·S every step back grows the
    gradient by up to ‖W_hh‖₂ ≈ 2.5, far beyond ρ = 0.5, and never beyond γ‖W_hh‖₂ (γ = 1, tanh)."""
    hidden, steps = 64, 60
    torch.manual_seed(0)
    net = RecurrentNet(
        "rnn", 2, hidden, 1, 1, readout="last", init={"input": "zeros", "bias": "zeros"}
    ).double()
    layer = net.layers[0]
    with torch.no_grad():
        layer.weight_hh_l0.copy_(_shift_plus_identity(hidden))
    norm, radius = recurrent_step_factors(fused_spec(layer))
    assert radius == pytest.approx(0.5, abs=1e-6)
    # ‖0.5 I + 2 S‖₂ of size H: the largest singular value of a tridiagonal Toeplitz product,
    # 2.5·cos(π/(H+1))-ish; bounded by 2.5 and above 2.49 at H = 64.
    assert 2.49 < norm <= 2.5
    probe = GradientFlowProbe(route="extra_input")
    inputs = torch.randn(8, steps, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _probed_outputs(probe, net, inputs).sum().backward()
    profile = probe.gradient_flow()["layer0"].hidden
    factors = profile[:-1] / profile[1:]  # n_{t-1} / n_t, one step back each
    assert (factors <= norm * (1 + 1e-9)).all()
    assert float(decay_rate(profile)) > 4 * radius  # ρ = 0.5 predicts vanishing; it explodes
    assert float(log10_ratio(profile)) > 10


def test_sigmoid_step_factors_carry_a_quarter():
    """Sigmoid RNN: the bound is ‖W_hh‖₂/4 and the linear-regime rate ρ(W_hh)/4 of the model's own W_hh."""
    torch.manual_seed(3)
    net = RecurrentNet("rnn", 2, 16, 1, 1, nonlinearity="sigmoid")
    w_hh = net.layers[0].weight_hh_l0.detach().double().numpy()
    import numpy as np

    norm, radius = recurrent_step_factors(fused_spec(net.layers[0]))
    assert norm == pytest.approx(np.linalg.svd(w_hh, compute_uv=False).max() / 4, rel=1e-6)
    assert radius == pytest.approx(np.abs(np.linalg.eigvals(w_hh)).max() / 4, rel=1e-6)
    lstm = RecurrentNet("lstm", 2, 16, 1, 1)
    assert recurrent_step_factors(fused_spec(lstm.layers[0])) is None


def test_statistics_of_profiles_with_zero_steps():
    profile = torch.tensor([0.0, 0.0, 1e-30, 1e-20, 1e-10, 1.0], dtype=torch.float64)
    assert zero_steps(profile) == 2
    assert float(log10_ratio(profile)) == pytest.approx(-30.0)  # over the non-zero span t = 2 … 5
    assert float(decay_rate(profile)) == pytest.approx(1e-10, rel=1e-9)  # the zeros are left out
    assert horizon(profile, 1e-3) == 0 and horizon(profile, 1e-11) == 1
    trailing = torch.tensor([1e-3, 1e-2, 1.0, 0.0, 0.0], dtype=torch.float64)  # last steps exactly zero
    assert zero_steps(trailing) == 2
    assert float(log10_ratio(trailing)) == pytest.approx(-3.0)
    assert horizon(trailing, 1e-2) == 1 and horizon(trailing, 1e-3) == 2
    gap = torch.tensor([1.0, 0.0, 1.0, 1.0])
    assert zero_steps(gap) == 1 and float(log10_ratio(gap)) == 0.0 and horizon(gap) == 1
    silent = torch.zeros(7)
    assert zero_steps(silent) == 7 and math.isnan(float(log10_ratio(silent)))
    assert math.isnan(float(decay_rate(silent))) and horizon(silent) == 0
    single = torch.tensor([0.0, 0.0, 3.0])
    assert (
        float(log10_ratio(single)) == 0.0 and math.isnan(float(decay_rate(single))) and horizon(single) == 0
    )
    overflowed = torch.tensor([math.inf, 1.0, 1.0])
    assert float(log10_ratio(overflowed)) == math.inf  # only when the backward itself overflowed


@pytest.mark.parametrize("dtype,nonzero", [(torch.bfloat16, 40), (torch.float16, 5)])
@pytest.mark.parametrize("route", ["extra_input", "adjoint"])
def test_half_precision_gradients_of_a_probed_model(flush_denormal, dtype, nonzero, route):
    """A bf16/fp16 sigmoid RNN: every step's norm is that of its stored entries (the adjoint route
    keeps the model's dtype), and a step reads 0 exactly when all its entries are 0."""
    from rnnflow.probes.gradient_flow import probed_layer_call, total_hidden_gradients

    flush_denormal(False)
    torch.manual_seed(0)
    net = RecurrentNet("rnn", 2, 16, 1, 1, readout="last", nonlinearity="sigmoid").to(dtype)
    records = {}

    def call(index, layer, inputs, state):
        hidden, final, records[index] = probed_layer_call(layer, inputs, state, route)
        return hidden, final

    net(torch.randn(4, 60, 2).to(dtype), layer_call=call).float().sum().backward()
    gradients, _ = total_hidden_gradients(records[0])
    norms = frobenius_per_step(gradients)
    torch.testing.assert_close(norms, hypot_per_step(gradients), rtol=4e-16, atol=0)
    assert torch.equal(norms == 0, gradients.eq(0).all(dim=2).all(dim=1))
    assert (norms > 0).sum() >= nonzero  # bf16 carries gradients down to ~1e-40, fp16 only to ~6e-8
