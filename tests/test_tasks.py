"""Task generators against independent recomputation; baselines against Monte Carlo; success criteria.

Every expected value here is written from the task's definition (the papers' numbers), not read
back from the implementation: marker windows, targets, baselines.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import CONF, compose_config

from rnnflow.config import ConfigError, validate_config
from rnnflow.tasks import TASKS, build_task
from rnnflow.tasks.base import uniform_int
from rnnflow.tasks.copy import BLANK, MARKER
from rnnflow.tasks.padding import draw_lengths, step_mask

CPU = torch.device("cpu")
N = 512  # batch size of the layout tests

# case id -> (task name, parameters)
CASES: dict[str, tuple[str, dict]] = {
    "adding": ("adding", dict(seq_len=30)),
    "adding_pascanu": ("adding", dict(seq_len=30, variant="pascanu")),
    "adding_hochreiter": ("adding", dict(seq_len=30, variant="hochreiter")),
    "multiplication": ("multiplication", dict(seq_len=30)),
    "multiplication_pascanu": ("multiplication", dict(seq_len=30, variant="pascanu")),
    "multiplication_hochreiter": ("multiplication", dict(seq_len=30, variant="hochreiter")),
    "copy": ("copy", dict(seq_len=15)),
    "temporal_order": ("temporal_order", dict(seq_len=40)),
    "temporal_order_3bit": ("temporal_order", dict(seq_len=40, bits=3)),
    "temporal_order_hochreiter": ("temporal_order", dict(seq_len=40, variant="hochreiter")),
    "temporal_order_3bit_hochreiter": ("temporal_order", dict(seq_len=40, bits=3, variant="hochreiter")),
    "permutation": ("permutation", dict(seq_len=25)),
    "permutation_5": ("permutation", dict(seq_len=25, vocab_size=12, first_symbols=5)),
    "parity": ("parity", dict(seq_len=12)),
    "selective_copy": ("selective_copy", dict(seq_len=20, n_copy=4, n_symbols=8)),
}
MARKED = [case for case in CASES if CASES[case][0] in ("adding", "multiplication")]
TEMPORAL = [case for case in CASES if CASES[case][0] == "temporal_order"]

# The best constant prediction E[y] of each regression case, from the definitions.
TARGET_MEAN = {
    "adding": 1.0,  # E[v1 + v2], v ~ U[0, 1]
    "adding_pascanu": 0.5,  # E[(v1 + v2)/2]
    "adding_hochreiter": 0.5,  # E[0.5 + (v1 + v2)/4], v ~ U[-1, 1]
    "multiplication": 0.25,  # E[v1] E[v2]
    "multiplication_pascanu": 0.25,
    "multiplication_hochreiter": 0.25,
}
# Baselines from the papers / the design notes (T as in CASES).
KNOWN_BASELINES = {
    "adding": 1 / 6,
    "adding_pascanu": 1 / 24,
    "adding_hochreiter": 1 / 24,
    "multiplication": 7 / 144,
    "copy": 10 * math.log(8) / (15 + 20),
    "temporal_order": math.log(4),
    "temporal_order_3bit": math.log(8),
    "temporal_order_hochreiter": math.log(4),
    "temporal_order_3bit_hochreiter": math.log(8),
    "permutation": math.log(2),
    "permutation_5": math.log(5),
    "parity": math.log(2),
    "selective_copy": 4 * math.log(8) / (20 + 4),
}


def make(case: str):
    name, params = CASES[case]
    return build_task(name, **params)


def draw(task, n: int = N, seed: int = 0, device: torch.device = CPU):
    return task.generate(n, torch.Generator(device=device).manual_seed(seed), device)


def perfect_outputs(task, targets: torch.Tensor) -> torch.Tensor:
    """A perfect model's read-out: the target value, or a confident one-hot of the target class."""
    if task.output_size == 1:
        return targets.unsqueeze(-1).float()
    return 50.0 * torch.nn.functional.one_hot(targets, task.output_size).float()


def float_metrics(task, outputs, targets) -> dict[str, float]:
    return {k: float(v) for k, v in task.metrics(outputs, targets).items()}


def test_every_task_is_covered():
    assert {name for name, _ in CASES.values()} == set(TASKS)


# ---------------------------------------------------------------- every task: interface contract


@pytest.mark.parametrize("case", CASES)
def test_shapes_dtypes_and_lengths(case):
    task = make(case)
    batch = draw(task)
    assert task.total_len >= task.seq_len
    if task.vocab_size is None:
        assert batch.inputs.shape == (N, task.total_len, task.input_size)
        assert batch.inputs.dtype == torch.float32
    else:
        assert batch.inputs.shape == (N, task.total_len) and batch.inputs.dtype == torch.long
        assert task.input_size == task.vocab_size
        assert int(batch.inputs.min()) >= 0 and int(batch.inputs.max()) < task.vocab_size
    if task.readout == "last":
        assert batch.targets.shape == (N,)
    else:
        assert batch.targets.shape == (N, task.total_len)
    if task.output_size == 1:
        assert batch.targets.dtype == torch.float32
    else:
        assert batch.targets.dtype == torch.long
        assert int(batch.targets.min()) >= 0 and int(batch.targets.max()) < task.output_size
    if batch.lengths is None:
        assert task.total_len in (task.seq_len, task.seq_len + 20, task.seq_len + getattr(task, "n_copy", 0))
    else:  # variable length T' in [T, 1.1 T], left-padded with zero vectors
        T = task.seq_len
        assert batch.lengths.shape == (N,) and batch.lengths.dtype == torch.long
        assert task.total_len == T + T // 10
        assert set(batch.lengths.tolist()) == set(range(T, T + T // 10 + 1))  # both ends reached
        pad = torch.arange(task.total_len) < (task.total_len - batch.lengths)[:, None]
        assert bool((batch.inputs[pad] == 0).all())
        first_nonzero = (batch.inputs != 0).any(dim=-1).float().argmax(dim=1)
        assert torch.equal(first_nonzero, task.total_len - batch.lengths)


@pytest.mark.parametrize("case", CASES)
def test_same_seed_same_batch_other_seed_other_batch(case):
    task = make(case)
    batch, again, other = draw(task, 64), draw(task, 64), draw(task, 64, seed=1)
    assert torch.equal(batch.inputs, again.inputs) and torch.equal(batch.targets, again.targets)
    if batch.lengths is not None:
        assert torch.equal(batch.lengths, again.lengths)
    assert not torch.equal(batch.inputs, other.inputs)
    assert not torch.equal(batch.targets, other.targets)


@pytest.mark.parametrize("case", CASES)
def test_perfect_predictions_are_solved(case):
    task = make(case)
    batch = draw(task)
    outputs = perfect_outputs(task, batch.targets)
    loss = float(task.loss(outputs, batch.targets))
    metrics = float_metrics(task, outputs, batch.targets)
    assert loss < 1e-6
    assert ("accuracy" in metrics) == task.has_accuracy
    if task.has_accuracy:
        assert metrics["accuracy"] == 1.0
    assert task.solved(loss, metrics)
    # The criterion is not met by an uninformed prediction (zeros: a constant 0, or uniform logits).
    uninformed = torch.zeros_like(outputs)
    assert not task.solved(
        float(task.loss(uninformed, batch.targets)), float_metrics(task, uninformed, batch.targets)
    )


@pytest.mark.parametrize("case", CASES)
def test_baseline_matches_monte_carlo_of_the_trivial_predictor(case):
    """The trivial predictor ignores the inputs: the target's mean (regression), the class frequencies
    (one label per sequence), or each step's target frequencies (a label per step)."""
    task = make(case)
    n = 100_000 if task.output_size == 1 else 40_000
    targets = draw(task, n=n, seed=7).targets
    if task.output_size == 1:
        outputs = torch.full((n, 1), TARGET_MEAN[case])
        tolerance = 0.03
    elif task.readout == "last":
        frequencies = torch.bincount(targets, minlength=task.output_size).float() / n
        outputs = frequencies.clamp_min(1e-12).log().expand(n, -1)
        tolerance = 0.01
    else:
        counts = torch.nn.functional.one_hot(targets, task.output_size).float().sum(dim=0)
        outputs = (counts / n).clamp_min(1e-12).log().expand(n, -1, -1)
        tolerance = 0.01
    monte_carlo = float(task.loss(outputs, targets))
    assert monte_carlo == pytest.approx(task.baseline_loss(), rel=tolerance)
    assert not task.solved(monte_carlo, float_metrics(task, outputs, targets))


@pytest.mark.parametrize("case", KNOWN_BASELINES)
def test_known_baselines(case):
    assert make(case).baseline_loss() == pytest.approx(KNOWN_BASELINES[case], rel=1e-12)


def test_criteria_thresholds():
    assert make("adding").solved(0.0099, {}) and not make("adding").solved(0.0101, {})
    assert make("multiplication").solved(0.0029, {}) and not make("multiplication").solved(0.0031, {})
    for case in ("adding_pascanu", "adding_hochreiter", "temporal_order", "copy", "parity"):
        task = make(case)
        assert task.solved(1.0, {"accuracy": 0.99}) and not task.solved(0.0, {"accuracy": 0.989})


# ---------------------------------------------------------------- layouts and targets, per task


@pytest.mark.parametrize("case", MARKED)
def test_marked_value_layout_and_targets(case):
    task = make(case)
    T, total = task.seq_len, task.total_len
    batch = draw(task)
    values, markers = batch.inputs.unbind(-1)
    marked = markers == 1
    assert bool((marked.sum(dim=1) == 2).all())
    first, second = marked.nonzero()[:, 1].view(N, 2).unbind(1)  # nonzero() is row-major: first < second
    v1, v2 = values.gather(1, first[:, None])[:, 0], values.gather(1, second[:, None])[:, 0]
    variant = task.variant
    if variant == "standard":
        assert batch.lengths is None
        assert bool((first < T // 2).all()) and bool((second >= T // 2).all())
        assert set(markers.unique().tolist()) == {0.0, 1.0}
    else:
        length = batch.lengths
        start = total - length
        first_offset, second_offset = first - start, second - start
        if variant == "pascanu":  # first tenth of the own length, then before its half
            assert bool((first_offset >= 0).all()) and bool((first_offset < length // 10).all())
            assert bool((second_offset >= length // 10).all()) and bool((second_offset < length // 2).all())
        else:  # hochreiter: -1 at both ends; one of the first ten steps; one of steps 1 .. T/2 - 1
            ends = markers == -1
            assert bool((ends.sum(dim=1) == 2).all())
            assert bool(ends[torch.arange(N), start].all()) and bool(ends[:, -1].all())
            assert bool((first_offset >= 1).all())
            in_first_ten = (first_offset <= 9) | (second_offset <= 9)
            assert bool(in_first_ten.all())
            assert bool((second_offset <= T // 2 - 1).all())
    low = -1.0 if (variant == "hochreiter" and task.name == "adding") else 0.0
    inside = step_mask(batch.lengths, total) if batch.lengths is not None else torch.ones_like(marked)
    assert float(values[inside].min()) >= low and float(values[inside].max()) <= 1.0
    assert float(values[inside].min()) < low + 0.01  # the whole range is used
    if task.name == "multiplication":
        expected = v1 * v2
    else:
        expected = {"standard": v1 + v2, "pascanu": (v1 + v2) / 2, "hochreiter": 0.5 + (v1 + v2) / 4}[variant]
    torch.testing.assert_close(batch.targets, expected)


# Windows of the relevant symbols at T = 40, from the papers: Pascanu's code [⌊pT⌋, ⌊pT⌋ + ⌊T/10⌋);
# H&S 1997 task 6a t1 ∈ [10, 20], t2 ∈ [50, 60] and 6b t1 ∈ [10, 20], t2 ∈ [33, 43], t3 ∈ [66, 76]
# for T = 100, scaled to T = 40 and rounded down (inclusive bounds).
WINDOWS_T40 = {
    "temporal_order": [(4, 7), (20, 23)],
    "temporal_order_3bit": [(4, 7), (12, 15), (24, 27)],
    "temporal_order_hochreiter": [(4, 8), (20, 24)],
    "temporal_order_3bit_hochreiter": [(4, 8), (13, 17), (26, 30)],
}


@pytest.mark.parametrize("case", TEMPORAL)
def test_temporal_order_layout_and_targets(case):
    task = make(case)
    bits, total = task.bits, task.total_len
    batch = draw(task)
    inside = (
        step_mask(batch.lengths, total) if batch.lengths is not None else torch.ones(N, total, dtype=bool)
    )
    assert torch.equal(batch.inputs.sum(dim=-1), inside.float())  # one-hot on the sequence, 0 on padding
    symbols = batch.inputs.argmax(dim=-1)
    start = total - batch.lengths if batch.lengths is not None else torch.zeros(N, dtype=torch.long)
    if task.variant == "hochreiter":
        assert task.input_size == 8
        assert bool((symbols[torch.arange(N), start] == 6).all()) and bool((symbols[:, -1] == 7).all())
        assert bool(((symbols == 6) & inside).sum(dim=1).eq(1).all()) and bool(
            (symbols == 7).sum(dim=1).eq(1).all()
        )
    else:
        assert task.input_size == 6 and int(symbols.max()) <= 5
    relevant = ((symbols == 4) | (symbols == 5)) & inside
    assert bool((relevant.sum(dim=1) == bits).all())
    steps = relevant.nonzero()[:, 1].view(N, bits) - start[:, None]
    for k, (low, high) in enumerate(WINDOWS_T40[case]):
        assert int(steps[:, k].min()) == low and int(steps[:, k].max()) == high  # the whole window, no more
    is_y = symbols.gather(1, steps + start[:, None]) - 4
    expected = sum(is_y[:, k] * 2 ** (bits - 1 - k) for k in range(bits))  # XX→0 (Q) … YY→3 (U)
    assert torch.equal(batch.targets, expected)
    assert task.output_size == 2**bits


@pytest.mark.parametrize("case", ["permutation", "permutation_5"])
def test_permutation_recalls_the_first_symbol(case):
    task = make(case)
    batch = draw(task)
    classes = task.output_size
    assert torch.equal(batch.targets, batch.inputs[:, 0])
    assert bool((batch.inputs[:, 0] < classes).all()) and bool((batch.inputs[:, 1:] >= classes).all())
    assert int(batch.inputs[:, 1:].max()) == task.vocab_size - 1


def test_parity_is_the_xor_of_all_bits():
    batch = draw(make("parity"))
    bits = batch.inputs.squeeze(-1).long()
    assert set(bits.unique().tolist()) == {0, 1}
    xor = bits[:, 0].clone()
    for t in range(1, bits.size(1)):
        xor ^= bits[:, t]
    assert torch.equal(batch.targets, xor)
    # Without the first bit the parity is a coin flip: the baseline ln 2 cannot be beaten that way.
    rest = bits[:, 1:].sum(dim=1) % 2
    assert abs(float((rest == batch.targets).float().mean()) - 0.5) < 0.1


def test_copy_layout():
    task = make("copy")
    batch = draw(task)
    data = batch.inputs[:, :10]
    assert bool((data < 8).all())
    assert bool((batch.inputs[:, 10 : 10 + 15 - 1] == BLANK).all())
    assert bool((batch.inputs[:, 10 + 15 - 1] == MARKER).all()) and bool(
        (batch.inputs[:, -10:] == BLANK).all()
    )
    assert bool((batch.targets[:, -10:] == data).all()) and bool((batch.targets[:, :-10] == BLANK).all())


def test_selective_copy_layout():
    task = make("selective_copy")
    T, n = 20, 4
    batch = draw(task)
    head = batch.inputs[:, :T]
    data_steps = head != task.blank
    assert bool((data_steps.sum(dim=1) == n).all()) and bool((head[data_steps] < 8).all())
    assert bool((batch.inputs[:, T:] == task.marker).all())
    assert torch.equal(batch.targets[:, T:], head[data_steps].view(N, n))  # in order of appearance
    assert bool((batch.targets[:, :T] == task.blank).all())
    positions = data_steps.nonzero()[:, 1]
    assert int(positions.min()) == 0 and int(positions.max()) == T - 1


# ---------------------------------------------------------------- helpers


def test_uniform_int_stays_below_high():
    generator = torch.Generator().manual_seed(0)
    high = torch.arange(1, 65).repeat(5000)
    drawn = uniform_int(0, high, high.numel(), generator, CPU)
    assert bool((drawn >= 0).all()) and bool((drawn < high).all())
    assert bool((drawn == high - 1).any())


def test_lengths_are_uniform_on_t_to_1_1_t():
    lengths = draw_lengths(50, 50_000, torch.Generator().manual_seed(0), CPU)
    counts = torch.bincount(lengths - 50).float()
    assert counts.numel() == 6 and float((counts / counts.mean() - 1).abs().max()) < 0.05


# ---------------------------------------------------------------- bad parameters, config


@pytest.mark.parametrize(
    "name,params,message",
    [
        ("sorting", {"seq_len": 5}, "task.name='sorting': expected one of adding, copy"),
        ("adding", {"seq_len": 50, "lenght": 3}, "task.lenght: not a parameter of task adding"),
        ("adding", {}, "task.seq_len: missing"),
        ("adding", {"seq_len": 1}, "task.seq_len=1: expected an integer >= 2"),
        ("adding", {"seq_len": 50, "variant": "x"}, "task.variant='x': expected one of standard, pascanu"),
        ("adding", {"seq_len": 9, "variant": "pascanu"}, "task.seq_len=9: expected an integer >= 10"),
        ("multiplication", {"seq_len": 19, "variant": "hochreiter"}, "task.seq_len=19"),
        ("temporal_order", {"seq_len": 40, "bits": 4}, "task.bits=4: expected one of 2, 3"),
        ("temporal_order", {"seq_len": 9}, "task.seq_len=9: expected an integer >= 10"),
        ("temporal_order", {"seq_len": 40, "variant": "standard"}, "task.variant='standard'"),
        (
            "selective_copy",
            {"seq_len": 3, "n_copy": 4},
            "task.seq_len=3: expected an integer >= task.n_copy=4",
        ),
        ("selective_copy", {"seq_len": 30, "n_copy": 2.5}, "task.n_copy=2.5: expected an integer >= 1"),
        ("permutation", {"seq_len": 30, "vocab_size": 2}, "task.vocab_size=2: expected an integer >= 3"),
        ("permutation", {"seq_len": 1}, "task.seq_len=1: expected an integer >= 2"),
    ],
)
def test_bad_task_parameters_name_the_key(name, params, message):
    with pytest.raises(ValueError) as error:
        build_task(name, **params)
    assert message in str(error.value) and "\n" not in str(error.value)


TASK_CONFIGS = sorted(path.stem for path in (Path(CONF) / "task").glob("*.yaml"))


@pytest.mark.parametrize("config", TASK_CONFIGS)
def test_every_task_config_validates_and_builds(config):
    from rnnflow.runtime.build import build_task_from_config

    cfg = compose_config(f"task={config}")
    validate_config(cfg)
    assert cfg.task.batch_size == 64 and cfg.task.val_batches == 8
    task = build_task_from_config(cfg)
    assert task.name == cfg.task.name and task.seq_len == cfg.task.seq_len
    if config == "temporal_order_3bit":
        assert task.baseline_loss() == pytest.approx(math.log(8))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["task=selective_copy", "task.seq_len=3"], "task.seq_len=3: expected an integer >= task.n_copy=4"),
        (["task=temporal_order", "task.bits=4"], "task.bits=4: expected one of 2, 3"),
        (["task=adding", "task.variant=pascal"], "task.variant='pascal': expected one of standard, pascanu"),
        (["task=adding", "task.variant=hochreiter", "task.seq_len=12"], "task.seq_len=12"),
        (["task=permutation", "task.first_symbols=100"], "task.vocab_size=100: expected an integer >= 101"),
    ],
)
def test_inconsistent_task_config_fails_validation(overrides, message):
    with pytest.raises(ConfigError) as error:
        validate_config(compose_config(*overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", CASES)
def test_generates_on_the_gpu(case):
    task, device = make(case), torch.device("cuda")
    batch, again = draw(task, 64, device=device), draw(task, 64, device=device)
    assert batch.inputs.device.type == batch.targets.device.type == "cuda"
    assert batch.lengths is None or batch.lengths.device.type == "cuda"
    assert torch.equal(batch.inputs, again.inputs)
    outputs = perfect_outputs(task, batch.targets)
    assert task.solved(float(task.loss(outputs, batch.targets)), float_metrics(task, outputs, batch.targets))
