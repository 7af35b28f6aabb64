"""The explanatory probes (activations, gates, Lyapunov exponents, temporal credit) against
independent references: an unrolled float64 loop written from the cell equations (autograd for
derivatives, one copy of W_hh per step for the per-step weight-gradient contributions, autograd
Jacobians for the exponents) and closed forms (W_hh = ρ·Q, diagonal W_hh)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from rnnflow.models.fused import SigmoidRNN, fused_spec, initial_state, run_fused
from rnnflow.probes.activations import activation_stats
from rnnflow.probes.credit import contribution_norms, credit_profile, early_share, step_deltas
from rnnflow.probes.gates import gate_stats
from rnnflow.probes.lyapunov import lyapunov_exponents, segment_plan
from rnnflow.probes.trajectory import recompute

KINDS = ["tanh", "relu", "sigmoid", "lstm", "gru"]
HIDDEN, INPUT = 5, 3


def make_layer(kind: str, dtype=torch.float64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "sigmoid":
        layer = SigmoidRNN(INPUT, HIDDEN)
    elif kind in ("tanh", "relu"):
        layer = nn.RNN(INPUT, HIDDEN, nonlinearity=kind, batch_first=True)
    else:
        layer = {"lstm": nn.LSTM, "gru": nn.GRU}[kind](INPUT, HIDDEN, batch_first=True)
    with torch.no_grad():  # larger weights than PyTorch's default: visible saturation, nonzero exponents
        for p in layer.parameters():
            p.mul_(2.5)
    return layer.to(dtype)


def fused_call(layer: nn.Module, x: torch.Tensor):
    """Time-major ``x`` → ``(spec, u, u_{-1}, c_{-1})`` of the fused call (kernel space)."""
    spec = fused_spec(layer)
    spec.batch_first = False
    state = initial_state(spec, x)
    with torch.no_grad():
        u, _ = run_fused(spec, x, state=state, raw_output=True)
    if isinstance(state, tuple):
        return spec, u, state[0][0], state[1][0]
    return spec, u, state[0], None


class Unrolled:
    """The cell equations one step at a time in float64, in the user's parametrisation."""

    def __init__(self, layer: nn.Module, kind: str, x: torch.Tensor, loss_weights: torch.Tensor):
        self.kind = kind
        w_ih, b_ih, b_hh = (p.detach() for p in (layer.weight_ih_l0, layer.bias_ih_l0, layer.bias_hh_l0))
        w_hh = layer.weight_hh_l0.detach()
        steps, batch, _ = x.shape
        self.copies = [w_hh.clone().requires_grad_() for _ in range(steps)]
        h = x.new_zeros(batch, HIDDEN, requires_grad=True)
        c = x.new_zeros(batch, HIDDEN, requires_grad=True)
        self.hs, self.cs, self.slopes, self.gates = [], [], [], []
        loss = x.new_zeros(())
        for t in range(steps):
            a_in, a_h = x[t] @ w_ih.T + b_ih, h @ self.copies[t].T + b_hh
            if kind in ("tanh", "relu", "sigmoid"):
                a = (a_in + a_h).detach().requires_grad_()
                phi = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}[kind]
                self.slopes.append(torch.autograd.grad(phi(a).sum(), a)[0])
                h = phi(a_in + a_h)
            elif kind == "lstm":
                ai, af, ag, ao = (a_in + a_h).chunk(4, dim=-1)
                i, f, g, o = torch.sigmoid(ai), torch.sigmoid(af), torch.tanh(ag), torch.sigmoid(ao)
                self.gates.append({"input": i, "forget": f, "output": o})
                probe = ag.detach().requires_grad_()
                self.slopes.append(torch.autograd.grad(torch.tanh(probe).sum(), probe)[0])
                c = f * c + i * g
                c.retain_grad()
                self.cs.append(c)
                h = o * torch.tanh(c)
            else:
                ir, iz, in_ = a_in.chunk(3, dim=-1)
                hr, hz, hn = a_h.chunk(3, dim=-1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                pre_n = in_ + r * hn
                probe = pre_n.detach().requires_grad_()
                self.slopes.append(torch.autograd.grad(torch.tanh(probe).sum(), probe)[0])
                self.gates.append({"reset": r, "update": z})
                h = (1 - z) * torch.tanh(pre_n) + z * h
            h.retain_grad()
            self.hs.append(h)
            loss = loss + (h * loss_weights[t]).sum()
        loss.backward()

    def hidden_grad(self) -> torch.Tensor:
        return torch.stack([h.grad for h in self.hs])

    def cell_grad(self) -> torch.Tensor | None:
        return torch.stack([c.grad for c in self.cs]) if self.cs else None

    def contributions(self) -> torch.Tensor:
        """‖∂L/∂W_hh^{(t)}‖_F of the step-t copy: the step's own term of ∂L/∂W_hh."""
        return torch.stack([torch.linalg.matrix_norm(w.grad) for w in self.copies])


def _data(steps: int = 9, batch: int = 4, last_only: bool = False):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(steps, batch, INPUT, dtype=torch.float64, generator=generator)
    weights = torch.randn(steps, batch, HIDDEN, dtype=torch.float64, generator=generator)
    if last_only:
        weights[:-1] = 0
    return x, weights


@pytest.mark.parametrize("kind", KINDS)
def test_derivative_profile_matches_unrolled_autograd(kind):
    layer = make_layer(kind)
    x, weights = _data()
    reference = Unrolled(layer, kind, x, weights)
    spec, u, initial, cell = fused_call(layer, x)
    stats = activation_stats(recompute(spec, x, u, initial, cell))
    slopes = torch.stack(reference.slopes)
    torch.testing.assert_close(stats.derivative_profile, slopes.mean(dim=(1, 2)), rtol=1e-10, atol=1e-12)
    largest = {"sigmoid": 0.25}.get(kind, 1.0)
    assert stats.saturated_fraction == pytest.approx(float((slopes < 0.01 * largest).double().mean()))
    if kind == "relu":
        dead = float((torch.stack(reference.hs) <= 0).all(dim=(0, 1)).double().mean())
        assert stats.dead_fraction == dead
    else:
        assert stats.dead_fraction is None


def test_saturation_and_dead_units_on_built_states():
    """Hand-set states: the fractions are counts the test knows."""
    layer = make_layer("tanh")
    spec, _, _, _ = fused_call(layer, torch.zeros(2, 1, INPUT, dtype=torch.float64))
    u = torch.zeros(4, 2, HIDDEN, dtype=torch.float64)
    u[:, :, :2] = 0.999  # 1 - u² ≈ 0.002 < 0.01: saturated
    u[:, :, 2] = -0.99  # 1 - u² ≈ 0.0199: not saturated
    trajectory = recompute(spec, torch.zeros(4, 2, INPUT, dtype=torch.float64), u, u[0])
    assert activation_stats(trajectory).saturated_fraction == pytest.approx(2 / HIDDEN)
    relu = make_layer("relu")
    spec, _, _, _ = fused_call(relu, torch.zeros(2, 1, INPUT, dtype=torch.float64))
    u = torch.rand(4, 2, HIDDEN, dtype=torch.float64) + 0.1
    u[:, :, 1] = 0.0  # never active: dead
    u[0, 0, 3] = 0.0  # inactive once, active elsewhere: not dead
    stats = activation_stats(recompute(spec, torch.zeros(4, 2, INPUT, dtype=torch.float64), u, u[0]))
    assert stats.dead_fraction == pytest.approx(1 / HIDDEN)
    assert stats.saturated_fraction == pytest.approx((4 * 2 + 1) / (4 * 2 * HIDDEN))
    assert stats.derivative_mean == pytest.approx(1 - (4 * 2 + 1) / (4 * 2 * HIDDEN))


def test_dead_units_count_the_whole_batch_when_the_statistics_use_a_few_samples():
    relu = make_layer("relu")
    spec, _, _, _ = fused_call(relu, torch.zeros(2, 1, INPUT, dtype=torch.float64))
    u = torch.rand(4, 3, HIDDEN, dtype=torch.float64) + 0.1
    u[:, :, 1] = 0.0  # never active in any sample: dead
    u[:, 0, 2] = 0.0  # silent in sample 0 only
    u[:, :2, 4] = -0.0  # silent in samples 0 and 1 (−0.0 is not active either)
    first = recompute(spec, torch.zeros(4, 1, INPUT, dtype=torch.float64), u[:, :1], u[0, :1])
    assert activation_stats(first).dead_fraction == pytest.approx(3 / HIDDEN)  # what sample 0 alone says
    whole = activation_stats(first, batch_outputs=u)
    assert whole.dead_fraction == pytest.approx(1 / HIDDEN)
    assert whole.ever_active.tolist() == [True, False, True, True, True]
    assert whole.derivative_profile.tolist() == activation_stats(first).derivative_profile.tolist()


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gate_means_and_timescale_match_hand_written_cell(kind):
    layer = make_layer(kind)
    x, weights = _data()
    reference = Unrolled(layer, kind, x, weights)
    spec, u, initial, cell = fused_call(layer, x)
    stats = gate_stats(recompute(spec, x, u, initial, cell))
    for name, value in stats.means.items():
        expected = float(torch.stack([g[name].detach() for g in reference.gates]).mean())
        assert value == pytest.approx(expected, rel=1e-12)
    memory = torch.stack([g[stats.memory_gate].detach() for g in reference.gates]).mean(dim=(0, 1))
    torch.testing.assert_close(stats.timescales, -1 / memory.log(), rtol=1e-10, atol=0)
    assert stats.timescale == float((-1 / memory.log()).median())


def test_forget_timescale_stays_finite_and_exact_near_one():
    """A forget bias of 25: 1 − f ≈ 1.4e−11, below float32's resolution of 1: τ ≈ 7.2e10, not ∞."""
    layer = make_layer("lstm", dtype=torch.float32)
    with torch.no_grad():
        layer.weight_hh_l0.zero_()
        layer.weight_ih_l0.zero_()
        layer.bias_ih_l0[HIDDEN : 2 * HIDDEN] = 25.0
        layer.bias_hh_l0[HIDDEN : 2 * HIDDEN] = 0.0
    x = torch.randn(6, 2, INPUT)
    spec, u, initial, cell = fused_call(layer, x)
    stats = gate_stats(recompute(spec, x, u, initial, cell))
    assert stats.timescale == pytest.approx(math.exp(25.0), rel=1e-6)  # −1/ln σ(25) = e^25 (1 + O(e^−25))


def scaled_orthogonal_layer(rho: float) -> nn.Module:
    """A tanh RNN with W_hh = ρ·Q and zero input weights and biases: the state stays 0."""
    layer = make_layer("tanh")
    with torch.no_grad():
        nn.init.orthogonal_(layer.weight_hh_l0)
        layer.weight_hh_l0.mul_(rho)
        for name in ("weight_ih_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(layer, name).zero_()
    return layer


@pytest.mark.parametrize("rho", [0.5, 0.9, 1.0, 1.3])
@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("segment", [None, 9])  # one pass; segments of 9 steps (+2 warm-up)
def test_lyapunov_of_scaled_orthogonal_is_log_rho(rho, count, segment):
    layer = scaled_orthogonal_layer(rho)
    x, _ = _data(steps=50, batch=3)
    spec, u, initial, cell = fused_call(layer, x)
    assert u.abs().max() == 0  # the state stays at 0, every Jacobian is W_hh
    exponents = lyapunov_exponents(recompute(spec, x, u, initial), count=count, qr_every=4, segment=segment)
    torch.testing.assert_close(exponents, torch.full((3, count), math.log(rho), dtype=torch.float64))


@pytest.mark.parametrize("segment", [None, 256])
def test_lyapunov_of_diagonal_is_sorted_log_entries(segment):
    layer = make_layer("tanh")
    entries = torch.tensor([0.3, -1.2, 0.8, 0.05, -0.6], dtype=torch.float64)
    with torch.no_grad():
        layer.weight_hh_l0.copy_(torch.diag(entries))
        for name in ("weight_ih_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(layer, name).zero_()
    steps = 4000
    x = torch.zeros(steps, 2, INPUT, dtype=torch.float64)
    spec, u, initial, _ = fused_call(layer, x)
    exponents = lyapunov_exponents(recompute(spec, x, u, initial), count=HIDDEN, segment=segment)
    expected = entries.abs().log().sort(descending=True).values
    # Finite-time exponents: ln|a_i| + O(1/T) from the start vectors' alignment.
    torch.testing.assert_close(exponents, expected.expand(2, HIDDEN), rtol=0, atol=5e-3)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("segment", [None, 256])
def test_lyapunov_of_gated_cell_without_recurrence_is_log_of_its_memory_gate(kind, segment):
    """Zero W_hh, zero input weights and inputs: the gates are constants set by the biases.

    GRU: ``h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}`` with constant n and z, so every ``J_t = diag(z)`` and the
    exponents are the sorted ``ln z_j``. LSTM on the joint (h, c): ``∂c_t/∂c_{t−1} = diag(f)``,
    nothing depends on ``h_{t−1}``, so the H leading exponents are the sorted ``ln f_j`` (the bounded
    factor ``o (1 − tanh² c_t)`` into h only adds O(1/T)).
    """
    layer = make_layer(kind)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0"):
            getattr(layer, name).zero_()
        bias = layer.bias_ih_l0 + layer.bias_hh_l0
    memory = torch.sigmoid(bias[HIDDEN : 2 * HIDDEN])  # lstm f (gates i f g o); gru z (gates r z n)
    steps = 4000
    x = torch.zeros(steps, 2, INPUT, dtype=torch.float64)
    spec, u, initial, cell = fused_call(layer, x)
    trajectory = recompute(spec, x, u, initial, cell)
    exponents = lyapunov_exponents(trajectory, count=HIDDEN, segment=segment)
    expected = memory.log().sort(descending=True).values
    # Measured error 3e−4 … 8e−4 (the start vectors' alignment, O(1/T)); neighbours differ by ≥ 0.013.
    torch.testing.assert_close(exponents, expected.expand(2, HIDDEN), rtol=0, atol=2e-3)


def _reference_exponents(layer, kind, x, count, seed=0):
    """QR iteration on autograd Jacobians of a hand-written step (joint (h, c) for the LSTM)."""
    return _reference_logs(layer, kind, x, count, 0, 0, x.size(0), seed) / x.size(0)


def _reference_logs(layer, kind, x, count, begin, count_from, end, seed=0):
    """``Σ ln|R_ii|`` of a QR iteration started at step ``begin`` and counted over ``[count_from, end)``."""
    w_ih, w_hh, b_ih, b_hh = (p.detach() for p in layer.parameters())
    dim = 2 * HIDDEN if kind == "lstm" else HIDDEN
    start = torch.linalg.qr(
        torch.randn(dim, count, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    )[0]
    results = []
    for b in range(x.size(1)):

        def step(state, xt):
            if kind == "lstm":
                h, c = state[:HIDDEN], state[HIDDEN:]
                ai, af, ag, ao = (w_ih @ xt + b_ih + w_hh @ h + b_hh).chunk(4)
                c = torch.sigmoid(af) * c + torch.sigmoid(ai) * torch.tanh(ag)
                return torch.cat([torch.sigmoid(ao) * torch.tanh(c), c])
            if kind == "gru":
                ir, iz, in_ = (w_ih @ xt + b_ih).chunk(3)
                hr, hz, hn = (w_hh @ state + b_hh).chunk(3)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                return (1 - z) * torch.tanh(in_ + r * hn) + z * state
            a = w_ih @ xt + b_ih + w_hh @ state + b_hh
            return {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}[kind](a)

        state, v, logs = (
            torch.zeros(dim, dtype=torch.float64),
            start.clone(),
            torch.zeros(count, dtype=torch.float64),
        )
        for t in range(end):
            xt = x[t, b]
            if t >= begin:
                jac = torch.autograd.functional.jacobian(lambda s, xt=xt: step(s, xt), state)
                q, r = torch.linalg.qr(jac @ v)
                if t >= count_from:
                    logs += r.diagonal().abs().log()
                v = q
            state = step(state, xt)
        results.append(logs)
    return torch.stack(results)


@pytest.mark.parametrize("kind", KINDS)
def test_lyapunov_matches_autograd_jacobians(kind):
    layer = make_layer(kind, seed=4)
    x, _ = _data(steps=30, batch=3)
    count = 3
    spec, u, initial, cell = fused_call(layer, x)
    exponents = lyapunov_exponents(recompute(spec, x, u, initial, cell), count=count)
    expected = _reference_exponents(layer, kind, x, count)
    torch.testing.assert_close(exponents, expected, rtol=1e-9, atol=1e-10)


def test_segment_plan_partitions_the_sequence():
    iterations, warmup, starts, counted = segment_plan(1000, 128)
    assert (iterations, warmup) == (160, 32)
    assert sum(counted) == 1000 and counted[0] == iterations and all(0 < c <= 128 for c in counted[1:])
    # Segment s counts the steps right after segment s − 1's, after a warm-up of τ steps.
    ends = np.cumsum(counted)
    assert starts == [0, *(int(e) - warmup for e in ends[:-1])]
    assert segment_plan(160, 128) == (160, 0, [0], [160])  # short: one pass
    assert segment_plan(1000, None) == (1000, 0, [0], [1000])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("count", "qr_every"), [(1, 1), (1, 7), (2, 1)])
def test_segmented_lyapunov_matches_autograd_jacobians_segment_by_segment(kind, count, qr_every):
    """Each segment against the reference iteration started at its first warm-up step and counted
    over its own steps (T = 47, segments of 8 counted steps + 2 warm-up: the last one short)."""
    layer = make_layer(kind, seed=5)
    x, _ = _data(steps=47, batch=2)
    spec, u, initial, cell = fused_call(layer, x)
    exponents = lyapunov_exponents(recompute(spec, x, u, initial, cell), count, qr_every, segment=8)
    _, warmup, starts, counted = segment_plan(47, 8)
    assert len(starts) == 6 and counted[-1] < 8
    logs = sum(
        _reference_logs(
            layer,
            kind,
            x,
            count,
            start,
            start + (0 if s == 0 else warmup),
            start + (0 if s == 0 else warmup) + n,
        )
        for s, (start, n) in enumerate(zip(starts, counted, strict=True))
    )
    torch.testing.assert_close(exponents, logs / 47, rtol=1e-9, atol=1e-10)


def test_lyapunov_qr_interval_keeps_top_exponent():
    layer = make_layer("lstm", seed=4)
    x, _ = _data(steps=40, batch=2)
    trajectory = recompute(*fused_call(layer, x)[:1], x, *fused_call(layer, x)[1:])
    every = lyapunov_exponents(trajectory, count=1, qr_every=1)
    sparse = lyapunov_exponents(trajectory, count=1, qr_every=7)
    torch.testing.assert_close(every, sparse, rtol=1e-12, atol=1e-12)


def test_lyapunov_count_is_checked():
    layer = make_layer("gru")
    x, _ = _data()
    trajectory = recompute(*fused_call(layer, x)[:1], x, *fused_call(layer, x)[1:])
    with pytest.raises(ValueError, match="count=6"):
        lyapunov_exponents(trajectory, count=6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("last_only", [False, True])
def test_credit_profile_matches_per_step_weight_copies(kind, last_only):
    layer = make_layer(kind)
    x, weights = _data(last_only=last_only)
    reference = Unrolled(layer, kind, x, weights)
    spec, u, initial, cell = fused_call(layer, x)
    trajectory = recompute(spec, x, u, initial, cell)
    norms = credit_profile(trajectory, reference.hidden_grad(), reference.cell_grad())
    expected = reference.contributions()
    torch.testing.assert_close(norms, expected, rtol=1e-9, atol=1e-300)
    half = x.size(0) // 2
    assert early_share(norms) == pytest.approx(float(expected[:half].sum() / expected.sum()), rel=1e-9)


def test_credit_deep_in_vanishing_regime_in_float32():
    """W = 0.5·Q, T = 60: the first steps' contributions are ~1e−29 of the last (δ ~ 1e−30); float32
    Grams of unscaled δ would underflow to 0 (squares below 1e−38) long before."""
    layer = make_layer("tanh")
    with torch.no_grad():
        nn.init.orthogonal_(layer.weight_hh_l0)
        layer.weight_hh_l0.mul_(0.5)
        layer.weight_ih_l0.mul_(0.1)
    x, weights = _data(steps=60, batch=4, last_only=True)
    reference = Unrolled(layer, "tanh", x, weights)
    expected = reference.contributions()
    assert expected[0] == 0  # h_{-1} = 0
    assert expected[1] / expected[-1] < 1e-25
    layer32 = layer.float()
    x32 = x.float()
    spec, u, initial, _ = fused_call(layer32, x32)
    norms = credit_profile(recompute(spec, x32, u, initial), reference.hidden_grad().float())
    assert norms[0] == 0 and (norms[1:] > 0).all()
    torch.testing.assert_close(norms, expected, rtol=2e-4, atol=0)


def test_credit_of_zero_gradient_is_zero_and_share_undefined():
    layer = make_layer("lstm")
    x, _ = _data()
    spec, u, initial, cell = fused_call(layer, x)
    zeros = torch.zeros_like(u)
    norms = credit_profile(recompute(spec, x, u, initial, cell), zeros, zeros)
    assert torch.equal(norms, torch.zeros_like(norms))
    assert early_share(norms) is None
    with pytest.raises(ValueError, match="cell-state gradient"):
        step_deltas(recompute(spec, x, u, initial, cell), zeros)


def test_gram_identity_against_outer_products():
    generator = torch.Generator().manual_seed(0)
    delta = torch.randn(7, 5, 12, generator=generator, dtype=torch.float64) * 1e-25
    previous = torch.randn(7, 5, 4, generator=generator, dtype=torch.float64)
    direct = torch.linalg.matrix_norm(torch.einsum("tbg,tbh->tgh", delta, previous))
    torch.testing.assert_close(contribution_norms(delta, previous), direct, rtol=1e-12, atol=0)


@pytest.mark.parametrize("count", [1, 2])
@pytest.mark.parametrize("segment", [None, 4])  # one pass; segments (their warm-ups annihilated too)
def test_lyapunov_of_annihilating_dynamics_is_minus_infinity_not_nan(count, segment):
    """ReLU units all off (zero weights): every Jacobian is 0, the exact exponent is −∞."""
    layer = make_layer("relu")
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()
    x, _ = _data()
    spec, u, initial, _ = fused_call(layer, x)
    exponents = lyapunov_exponents(recompute(spec, x, u, initial), count=count, segment=segment)
    assert torch.equal(exponents, torch.full_like(exponents, -math.inf))


@pytest.mark.parametrize("rho", [1e-8, 1e9])
def test_lyapunov_long_qr_interval_stays_exact_beyond_float64_range(rho):
    """ρ = 1e−8 (1e9) over 50 steps leaves float64's range: the block is redone step by step."""
    layer = scaled_orthogonal_layer(rho)
    x, _ = _data(steps=120, batch=2)
    spec, u, initial, _ = fused_call(layer, x)
    for count in (1, 2):
        exponents = lyapunov_exponents(recompute(spec, x, u, initial), count=count, qr_every=50)
        torch.testing.assert_close(exponents, torch.full((2, count), math.log(rho), dtype=torch.float64))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_consumers_share_one_trajectory_and_the_probes_norms(kind):
    """A consumer's :class:`LayerBackward` carries the probe's own ``‖∂L/∂h_t‖`` (no second
    reduction), and a request for fewer samples of the shared trajectory is served by its first
    samples: the same quantities as a trajectory recomputed from those samples alone."""
    from rnnflow.callbacks.trajectory import release, shared_trajectory, sub_batch
    from rnnflow.probes.gradient_flow import GradientFlowProbe, frobenius_per_step

    layer = make_layer(kind, seed=2)
    x, weights = _data(steps=25, batch=6)
    probe = GradientFlowProbe()
    seen = []

    def consume(call):
        wide = shared_trajectory(call, 5)
        narrow = shared_trajectory(call, 3)
        part = sub_batch(call, 3)
        alone = recompute(part.spec, part.inputs, part.outputs, part.initial, part.initial_cell)
        seen.append((call, wide, narrow, alone))

    probe.add_consumer(consume)
    with probe.attach(layer):
        (layer(x)[0] * weights).sum().backward()
    flows = probe.gradient_flow()
    release()
    ((call, wide, narrow, alone),) = seen
    assert narrow.outputs.size(1) == 3 and wide.outputs.size(1) == 5
    assert narrow.preactivations.data_ptr() == wide.preactivations.data_ptr()  # views, not a recomputation
    for name in ("previous", "preactivations", "cells", "previous_cells", "recurrent_n"):
        if getattr(alone, name) is not None:
            torch.testing.assert_close(getattr(narrow, name), getattr(alone, name), rtol=1e-12, atol=0)
    (flow,) = flows.values()
    assert torch.equal(call.hidden_profile(), flow.hidden)
    assert torch.equal(call.hidden_profile(), frobenius_per_step(call.hidden_grad))
    if kind == "lstm":
        assert torch.equal(call.cell_profile(), flow.cell)
    assert sub_batch(call, 3).hidden_norms is None  # a sub-batch reduces its own
