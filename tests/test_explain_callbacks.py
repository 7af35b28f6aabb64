"""The explanatory instruments in training runs: tags per cell, closed forms end to end, switches,
truncated BPTT, per-parameter gradients."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import read_scalars
from lightning.pytorch.utilities import grad_norm
from torch import nn

from rnnflow.callbacks.parameters import exact_gradient_norms

COMMON = ["trainer.max_steps=1", "task.seq_len=20"]


@pytest.mark.parametrize(
    "overrides,present,absent",
    [
        (
            ["model=rnn", "model.nonlinearity=relu"],
            ["activations/layer0/dead_fraction", "spectral/layer0/radius"],
            ["gates/layer0/forget_mean"],
        ),
        (
            ["model=lstm"],
            ["gates/layer0/forget_mean", "gates/layer0/forget_timescale", "gates/layer0/input_mean"],
            ["activations/layer0/dead_fraction", "gates/layer0/update_mean"],
        ),
        (
            ["model=gru"],
            ["gates/layer0/update_mean", "gates/layer0/update_timescale", "gates/layer0/reset_mean"],
            ["activations/layer0/dead_fraction", "gates/layer0/forget_mean"],
        ),
    ],
    ids=["relu", "lstm", "gru"],
)
def test_every_instrument_writes_its_tags(train_run, overrides, present, absent):
    _, run_dir = train_run(*overrides, *COMMON)
    tags = read_scalars(run_dir)
    common = [
        "activations/layer0/derivative_mean",
        "activations/layer0/saturated_fraction",
        "dynamics/layer0/lyapunov_max",
        "grad_flow/layer0/early_share",
        "params/layer0/grad_norm",
        "params/layer0/grad_norm_to_top",
        "params/layer0/update_ratio",
        "param_grad/model.layers.0.weight_hh_l0/norm",
        "param_grad/model.head.weight/update_ratio",
    ]
    for tag in common + present:
        assert tag in tags, tag
        assert all(math.isfinite(v) for _, v in tags[tag]), tag
    for tag in absent:
        assert tag not in tags


@pytest.mark.parametrize("rho", [0.7, 1.2])
def test_logged_lyapunov_exponent_is_log_rho_on_the_closed_form(train_run, rho):
    """W_hh = ρ·Q, zero input weights and biases: the state stays 0, λ₁ = ln ρ = ln α exactly."""
    _, run_dir = train_run(
        "model=rnn",
        "model.init.recurrent=orthogonal",
        f"model.init.spectral_radius={rho}",
        "model.init.input=zeros",
        "model.init.bias=zeros",
        "diagnostics.lyapunov_count=3",
        *COMMON,
    )
    tags = read_scalars(run_dir)
    step0 = {tag: values[0][1] for tag, values in tags.items()}
    for tag in ("dynamics/layer0/lyapunov_max", "dynamics/layer0/lyapunov_2", "dynamics/layer0/lyapunov_3"):
        assert step0[tag] == pytest.approx(math.log(rho), abs=1e-6)
    assert math.log(step0["grad_flow/layer0/decay_rate"]) == pytest.approx(math.log(rho), abs=1e-5)
    assert step0["activations/layer0/derivative_mean"] == 1.0  # tanh'(0)
    assert step0["activations/layer0/saturated_fraction"] == 0.0


def test_instruments_switch_off(train_run):
    off = [
        f"diagnostics.{name}=false" for name in ("activations", "gates", "lyapunov", "credit", "parameters")
    ]
    _, run_dir = train_run("model=lstm", *COMMON, *off, "diagnostics.verdict=false")
    tags = read_scalars(run_dir)
    prefixes = ("activations/", "gates/", "dynamics/", "params/", "param_grad/")
    assert not [tag for tag in tags if tag.startswith(prefixes) or tag.endswith("early_share")]
    assert "grad_flow/layer0/log10_ratio" in tags  # the gradient-flow probe itself stays on


def test_truncated_bptt_merges_the_chunks(train_run):
    _, run_dir = train_run(
        "model=lstm", "task=copy", "task.seq_len=10", "tbptt.chunk=10", "trainer.max_steps=3"
    )
    tags = read_scalars(run_dir)
    for tag in (
        "gates/layer0/forget_timescale",
        "dynamics/layer0/lyapunov_max",
        "grad_flow/layer0/early_share",
    ):
        assert tag in tags and all(math.isfinite(v) for _, v in tags[tag])


def test_depth_ratio_of_a_stack(train_run):
    _, run_dir = train_run("model=rnn", "model.num_layers=3", *COMMON)
    tags = read_scalars(run_dir)
    assert tags["params/layer2/grad_norm_to_top"][0][1] == 1.0
    for layer in range(3):
        ratio = tags[f"params/layer{layer}/grad_norm_to_top"][0][1]
        norm = tags[f"params/layer{layer}/grad_norm"][0][1]
        assert ratio == pytest.approx(norm / tags["params/layer2/grad_norm"][0][1], rel=1e-6)
        parts = [
            f"param_grad/model.layers.{layer}.{p}_l0/norm"
            for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        ]
        assert norm == pytest.approx(math.sqrt(sum(tags[p][0][1] ** 2 for p in parts)), rel=1e-5)


def test_parameter_norms_do_not_underflow_where_lightning_would():
    layer = nn.Linear(50, 40)
    layer.weight.grad = torch.full_like(layer.weight, 3e-24)
    layer.bias.grad = torch.zeros_like(layer.bias)
    previous = torch.is_flush_denormal_enabled() if hasattr(torch, "is_flush_denormal_enabled") else None
    torch.set_flush_denormal(True)
    try:
        assert float(grad_norm(layer, 2)["grad_2.0_norm/weight"]) == 0.0  # the float32 squares underflow
        norms = exact_gradient_norms(layer)
    finally:
        torch.set_flush_denormal(True if previous is None else previous)  # rnnflow's default when unknown
    assert norms["weight"] == pytest.approx(3e-24 * math.sqrt(2000), rel=1e-6)
    assert norms["bias"] == 0.0
