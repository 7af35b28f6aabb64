"""Short training runs through the compose API, read back from TensorBoard."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import read_scalars
from tbparse import SummaryReader


@pytest.mark.parametrize("model", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("task", ["adding", "copy"])
def test_every_model_trains_on_every_task(train_run, model, task):
    metrics, out = train_run(
        f"model={model}", f"task={task}", "trainer.max_steps=4", "trainer.val_check_interval=2"
    )
    tags = read_scalars(out)
    assert [s for s, _ in tags["train/loss"]] == [0, 1, 2, 3]
    assert all(math.isfinite(v) for _, v in tags["train/loss"])
    assert [s for s, _ in tags["val/loss"]] == [1, 3]
    baseline = {"adding": 1 / 6, "copy": 10 * math.log(8) / (12 + 20)}[task]
    assert tags["val/baseline_loss"][-1][1] == pytest.approx(baseline, rel=1e-6)
    assert ("val/accuracy" in tags) == (task == "copy")
    assert metrics["val/loss"] == pytest.approx(tags["val/loss"][-1][1])
    assert (out / "checkpoints" / "last.ckpt").exists()


def test_a_two_step_run_logs_train_and_validation_and_hparams(train_run):
    _, out = train_run("trainer.max_steps=2")  # val_check_interval (250) is never reached
    tags = read_scalars(out)
    assert len(tags["train/loss"]) == 2
    assert [s for s, _ in tags["val/loss"]] == [1]
    hparams = SummaryReader(str(out / "tb")).hparams
    values = dict(zip(hparams.tag, hparams.value, strict=True))
    assert values["model"] == "lstm" and values["task"] == "adding"  # the cell and task columns
    assert tags["hparams/val_loss"][0][1] == pytest.approx(tags["val/loss"][-1][1])
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2


def test_lstm_learns_the_adding_problem(train_run):
    """Not a timing test: 300 steps of a small LSTM cut the validation MSE well below the 1/6 baseline."""
    _, out = train_run(
        "model.hidden_size=32",
        "task.seq_len=10",
        "task.batch_size=32",
        "task.val_batches=2",
        "optim.lr=1e-2",
        "trainer.max_steps=300",
        "trainer.val_check_interval=50",
        "diagnostics.every_n_steps=null",
    )
    val = [v for _, v in read_scalars(out)["val/loss"]]
    assert val[-1] < 0.05 < 1 / 6
