"""Profile summaries and spectra against closed forms and numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnflow.models import RecurrentNet
from rnnflow.probes.profile_stats import decay_fit, horizon, log10_ratio, log_spaced_steps
from rnnflow.probes.recurrent_modules import find_recurrent_modules, named_layers
from rnnflow.probes.spectral import gate_spectra, network_spectra


def test_geometric_profile_statistics():
    alpha, length = 0.8, 50
    profile = 3.0 * alpha ** torch.arange(length - 1, -1, -1, dtype=torch.float64)
    fitted_alpha, end = decay_fit(profile)
    assert float(fitted_alpha) == pytest.approx(alpha, rel=1e-12)
    assert float(end) == pytest.approx(3.0, rel=1e-12)
    assert float(log10_ratio(profile)) == pytest.approx((length - 1) * math.log10(alpha))
    # 0.8^k >= 1e-3  <=>  k <= log(1e-3)/log(0.8) = 30.96
    assert horizon(profile, 1e-3) == 30


def test_horizon_edges():
    flat = torch.ones(10)
    assert horizon(flat) == 9
    dip = torch.tensor([1.0, 1.0, 1e-9, 1.0, 1.0])
    assert horizon(dip, 1e-3) == 1  # steps 4 and 3 are within; the break at t = 2 ends it
    assert horizon(torch.tensor([float("nan"), 1.0]), 0.5) == 0


def test_decay_fit_ignores_zeros_and_needs_two_points():
    profile = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    assert float(decay_fit(profile)[0]) == pytest.approx(0.5)
    assert math.isnan(float(decay_fit(torch.tensor([0.0, 1.0]))[0]))


@pytest.mark.parametrize("length", [1, 5, 8, 9, 100, 1000, 12345])
def test_log_spaced_steps(length):
    steps = log_spaced_steps(length)
    assert steps[0] == 0 and steps[-1] == length - 1
    assert steps == sorted(set(steps))
    assert len(steps) <= 9
    assert len(steps) == min(length, len(steps)) and (length < 8 or len(steps) >= 7)


def test_gate_spectra_closed_form_and_numpy():
    torch.manual_seed(0)
    hidden = 16
    q, _ = torch.linalg.qr(torch.randn(hidden, hidden, dtype=torch.float64))
    gaussian = torch.randn(hidden, hidden, dtype=torch.float64)
    stacked = torch.cat([0.7 * q, gaussian])
    spectra = gate_spectra(stacked, ("a", "b"))
    assert spectra["a"][0] == pytest.approx(0.7, rel=1e-10)  # radius of ρ·Q
    assert spectra["a"][1] == pytest.approx(0.7, rel=1e-10)  # norm of ρ·Q
    g = gaussian.numpy()
    assert spectra["b"][0] == pytest.approx(np.abs(np.linalg.eigvals(g)).max(), rel=1e-10)
    assert spectra["b"][1] == pytest.approx(np.linalg.svd(g, compute_uv=False).max(), rel=1e-10)
    assert spectra["b"][0] <= spectra["b"][1]


@pytest.mark.parametrize("cell,gates", [("rnn", None), ("lstm", "ifgo"), ("gru", "rzn")])
def test_network_spectra_tags_and_spectral_radius_init(cell, gates):
    init = {"recurrent": "orthogonal", "spectral_radius": 1.3}
    net = RecurrentNet(cell, 2, 12, 2, 1, init=init)
    scalars = network_spectra(named_layers(find_recurrent_modules(net)))
    for layer in range(2):
        for gate in gates or [None]:
            prefix = f"spectral/layer{layer}/" + (f"{gate}/" if gate else "")
            assert scalars[prefix + "radius"] == pytest.approx(1.3, rel=1e-5)
            assert scalars[prefix + "norm"] == pytest.approx(1.3, rel=1e-5)  # orthogonal: ‖ρQ‖₂ = ρ
    assert len(scalars) == 2 * 2 * (len(gates) if gates else 1)
