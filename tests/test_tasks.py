"""Task generators against independent recomputation; baselines against Monte Carlo."""

from __future__ import annotations

import math

import pytest
import torch

from rnnflow.tasks import TASKS, build_task
from rnnflow.tasks.copy import BLANK, MARKER

CASES = {
    "adding": dict(seq_len=30),
    "adding_pascanu": dict(seq_len=30, variant="pascanu"),
    "multiplication": dict(seq_len=30),
    "copy": dict(seq_len=15),
    "temporal_order": dict(seq_len=40),
    "temporal_order_3bit": dict(seq_len=40, bits=3),
    "permutation": dict(seq_len=25, vocab_size=6),
    "parity": dict(seq_len=12),
    "selective_copy": dict(seq_len=20, n_copy=4, n_symbols=8),
}


def make(case: str):
    name = case.removesuffix("_pascanu").removesuffix("_3bit")
    return build_task(name, **CASES[case])


def draw(task, n=512, seed=0):
    return task.generate(n, torch.Generator().manual_seed(seed), torch.device("cpu"))


def perfect_outputs(task, batch):
    """What a perfect model outputs: the target value, or a confident one-hot of the target class."""
    if task.output_size == 1:
        return batch.targets.unsqueeze(-1).float()
    return 50.0 * torch.nn.functional.one_hot(batch.targets, task.output_size).float()


@pytest.mark.parametrize("case", CASES)
def test_shapes_determinism_and_perfect_predictions(case):
    task = make(case)
    batch = draw(task)
    if task.vocab_size is None:
        assert (
            batch.inputs.shape == (512, task.total_len, task.input_size) and batch.inputs.is_floating_point()
        )
    else:
        assert batch.inputs.shape == (512, task.total_len) and batch.inputs.dtype == torch.long
        assert int(batch.inputs.min()) >= 0 and int(batch.inputs.max()) < task.vocab_size
    expected_targets = (512,) if task.readout == "last" else (512, task.total_len)
    assert batch.targets.shape == expected_targets
    again, other = draw(task), draw(task, seed=1)
    assert torch.equal(batch.inputs, again.inputs) and torch.equal(batch.targets, again.targets)
    assert not torch.equal(batch.inputs, other.inputs)
    outputs = perfect_outputs(task, batch)
    loss = float(task.loss(outputs, batch.targets))
    metrics = {k: float(v) for k, v in task.metrics(outputs, batch.targets).items()}
    assert loss < 1e-6
    assert task.solved(loss, metrics)
    if task.has_accuracy:
        assert metrics["accuracy"] == 1.0


@pytest.mark.parametrize("case", ["adding", "adding_pascanu", "multiplication"])
def test_marked_value_tasks(case):
    task = make(case)
    batch = draw(task)
    values, markers = batch.inputs.unbind(-1)
    assert torch.equal(markers.sum(dim=1), torch.full((512,), 2.0))
    positions = markers.nonzero()[:, 1].view(512, 2)
    marked = values.gather(1, positions)
    expected = marked.prod(dim=1) if case == "multiplication" else marked.sum(dim=1)
    torch.testing.assert_close(batch.targets, expected)
    if case == "adding":
        assert bool((positions[:, 0] < 15).all()) and bool((positions[:, 1] >= 15).all())
    if case == "adding_pascanu":
        lengths = task.total_len - (values != 0).float().argmax(dim=1)  # first non-padded step
        assert int(lengths.min()) >= 30 and int(lengths.max()) <= 33
        start = task.total_len - lengths
        assert bool((positions[:, 0] - start < lengths // 10).all())
        assert bool((positions[:, 1] - start < lengths // 2).all())


def test_copy_layout():
    task = make("copy")
    batch = draw(task)
    data = batch.inputs[:, :10]
    assert bool((data < 8).all())
    assert bool((batch.inputs[:, 10 + 15 - 1] == MARKER).all())
    assert bool((batch.targets[:, -10:] == data).all()) and bool((batch.targets[:, :-10] == BLANK).all())


@pytest.mark.parametrize("case,bits", [("temporal_order", 2), ("temporal_order_3bit", 3)])
def test_temporal_order_targets(case, bits):
    task = make(case)
    batch = draw(task)
    assert bool((batch.inputs[:, 0] == 6).all()) and bool((batch.inputs[:, -1] == 7).all())
    relevant = (batch.inputs == 4) | (batch.inputs == 5)
    assert bool((relevant.sum(dim=1) == bits).all())
    symbols = batch.inputs[relevant].view(512, bits) - 4
    expected = sum(symbols[:, k] * 2 ** (bits - 1 - k) for k in range(bits))
    assert torch.equal(batch.targets, expected)
    assert task.num_classes == 2**bits


def test_permutation_parity_selective_copy_targets():
    batch = draw(make("permutation"))
    assert torch.equal(batch.targets, batch.inputs[:, 0])
    batch = draw(make("parity"))
    assert torch.equal(batch.targets, batch.inputs.squeeze(-1).long().sum(dim=1) % 2)
    task = make("selective_copy")
    batch = draw(task)
    first = batch.inputs[:, :20]
    data = first[first < 8].view(512, 4)  # in order of appearance
    assert torch.equal(batch.targets[:, 20:], data) and bool((batch.inputs[:, 20:] == 9).all())


@pytest.mark.parametrize("case", CASES)
def test_baseline_matches_monte_carlo_of_the_trivial_predictor(case):
    """The trivial predictor: the target's mean (regression), or the class frequencies it can know."""
    task = make(case)
    batch = draw(task, n=40_000, seed=7)
    targets = batch.targets
    if task.output_size == 1:
        mean = {"adding": 1.0, "adding_pascanu": 1.0, "multiplication": 0.25}[case]
        outputs = torch.full((len(targets), 1), mean)
    elif task.readout == "last":
        outputs = torch.zeros(len(targets), task.output_size)  # uniform over the classes
    else:  # blank where the target is always blank, uniform over the data symbols at recall steps
        n_recall = 10 if case == "copy" else task.n_copy
        n_symbols = 8
        outputs = torch.full((*targets.shape, task.output_size), -1e4)
        outputs[:, :-n_recall, targets[0, 0]] = 0.0
        outputs[:, -n_recall:, :n_symbols] = 0.0
    monte_carlo = float(task.loss(outputs, targets))
    assert monte_carlo == pytest.approx(task.baseline_loss(), rel=0.02)
    assert not task.solved(monte_carlo, {k: float(v) for k, v in task.metrics(outputs, targets).items()})


def test_known_baselines():
    assert make("adding").baseline_loss() == pytest.approx(1 / 6)
    assert make("copy").baseline_loss() == pytest.approx(10 * math.log(8) / (15 + 20))
    assert make("temporal_order").baseline_loss() == pytest.approx(math.log(4))
    assert make("temporal_order_3bit").baseline_loss() == pytest.approx(math.log(8))
    assert set(TASKS) >= {"adding", "copy", "multiplication", "temporal_order", "permutation", "parity"}


@pytest.mark.parametrize(
    "name,params,key",
    [
        ("sorting", {"seq_len": 5}, "task.name='sorting'"),
        ("adding", {"seq_len": 1}, "task.seq_len=1"),
        ("adding", {"seq_len": 50, "variant": "x"}, "task.variant='x'"),
        ("temporal_order", {"seq_len": 40, "bits": 4}, "task.bits=4"),
        ("selective_copy", {"seq_len": 3, "n_copy": 4}, "task.seq_len=3"),
    ],
)
def test_bad_task_parameters(name, params, key):
    with pytest.raises(ValueError, match=key.replace("[", r"\[")):
        build_task(name, **params)
