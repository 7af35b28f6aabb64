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


# Worked by hand: distances d_k = round(T^(k/7) - 1), k = 0 … 7, and T - 1; steps T - 1 - d_k.
# T = 100: T^(1/7) = 1.931 → d = 0, 1 (0.93), 3 (2.73), 6 (6.20), 13 (12.9), 26 (25.8), 51 (50.8), 99.
# T = 1000: T^(1/7) = 2.683 → d = 0, 2 (1.68), 6 (6.20), 18 (18.3), 51 (50.8), 138 (137.9), 372 (371.8), 999.
# T = 9: T^(1/7) = 1.369 → d = 0, 0 (0.37), 1 (0.87), 2 (1.56), 3 (2.51), 4 (3.80), 6 (5.58), 8.
LOG_SPACED = {
    1: [0],
    5: [0, 1, 2, 3, 4],
    8: [0, 1, 2, 3, 4, 5, 6, 7],
    9: [0, 2, 4, 5, 6, 7, 8],
    100: [0, 48, 73, 86, 93, 96, 98, 99],
    1000: [0, 627, 861, 948, 981, 993, 997, 999],
}


@pytest.mark.parametrize("length,expected", sorted(LOG_SPACED.items()))
def test_log_spaced_steps(length, expected):
    assert log_spaced_steps(length) == expected


def test_log_spaced_steps_long_sequence():
    steps = log_spaced_steps(12345)
    distances = [12344 - t for t in reversed(steps)]
    assert distances[0] == 0 and distances[-1] == 12344 and len(steps) == 8
    # (d_k + 1) grows by T^(1/7) = 3.84 per k, to rounding
    ratios = [(b + 1) / (a + 1) for a, b in zip(distances[1:-1], distances[2:], strict=False)]
    assert ratios == pytest.approx([12345 ** (1 / 7)] * len(ratios), rel=0.15)


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
