"""Same seed, same stream and metrics; resuming continues exactly the uninterrupted run."""

from __future__ import annotations

import pytest
import torch
from conftest import read_scalars
from tbparse import SummaryReader

FEW = ["trainer.val_check_interval=4", "diagnostics.every_n_steps=3", "clip.max_norm=0.5"]


def values(run_dir, tag):
    return read_scalars(run_dir)[tag]


def test_same_seed_same_metrics_other_seed_differs(train_run):
    _, a = train_run(*FEW, "trainer.max_steps=6", name="a")
    _, b = train_run(*FEW, "trainer.max_steps=6", name="b")
    _, c = train_run(*FEW, "trainer.max_steps=6", "seed=1", name="c")
    for tag in ("train/loss", "val/loss", "clip/pre_norm", "grad_flow/layer0/log10_ratio"):
        assert values(a, tag) == values(b, tag)
    assert values(a, "train/loss") != values(c, "train/loss")


def test_data_stream_is_a_function_of_seed_and_index():
    from rnnflow.lit.data import SyntheticDataModule
    from rnnflow.tasks import AddingTask

    data = SyntheticDataModule(AddingTask(10), batch_size=4, val_batches=2, seed=3)
    first = data.make_batch(0, 5, torch.device("cpu"))
    again = data.make_batch(0, 5, torch.device("cpu"))
    other = data.make_batch(0, 6, torch.device("cpu"))
    val = data.make_batch(1, 5, torch.device("cpu"))
    assert torch.equal(first.inputs, again.inputs)
    assert not torch.equal(first.inputs, other.inputs) and not torch.equal(first.inputs, val.inputs)
    rank1 = data.make_batch(0, 5, torch.device("cpu"), rank=1)
    assert not torch.equal(first.inputs, rank1.inputs)


def event_file_scalars(path):
    """``{tag: [(step, value), …]}`` of one event file."""
    frame = SummaryReader(str(path)).scalars
    return {tag: list(zip(g.step, g.value, strict=True)) for tag, g in frame.groupby("tag")}


@pytest.mark.parametrize("extra", [[], ["tbptt.chunk=5", "task=copy"]], ids=["full", "tbptt"])
def test_resume_continues_the_uninterrupted_run(train_run, extra):
    """Pins the Lightning behaviour rnnflow relies on instead of writing Lightning's private step
    counter: a checkpoint saved at the end of a training batch (rnnflow saves only there) resumes
    with the next TensorBoard step and the next batch of the data stream, with a validation due
    after that batch or not (run it under each Lightning version the project admits)."""
    _, full = train_run(*FEW, *extra, "trainer.max_steps=8", name="full")
    _, first = train_run(*FEW, *extra, "trainer.max_steps=4", name="first")
    ckpt = first / "checkpoints" / "last.ckpt"
    before = set((first / "tb").glob("events.*"))
    _, elsewhere = train_run(*FEW, *extra, "trainer.max_steps=8", f"ckpt_path={ckpt}", name="resumed")
    # The resumed run writes a second event file into the run dir of its checkpoint.
    assert not elsewhere.exists()
    [new_file] = set((first / "tb").glob("events.*")) - before
    [old_file] = before
    first_part, resumed_part = event_file_scalars(old_file), event_file_scalars(new_file)
    # the resumed run logs from the batch after the first run's last one (x-axis: batches)
    assert resumed_part["train/loss"][0][0] == first_part["train/loss"][-1][0] + 1
    for tag in ("train/loss", "clip/pre_norm", "clip/events", "grad_flow/layer0/log10_ratio", "val/loss"):
        uninterrupted = values(full, tag)
        continued = first_part[tag] + resumed_part[tag]
        # the first run's final validation (its last step) is repeated by neither run's schedule
        steps = sorted({s for s, _ in continued})
        assert [s for s, _ in uninterrupted if s in steps] == [s for s, _ in uninterrupted]
        by_step = dict(continued)
        for step, value in uninterrupted:
            if step in by_step:
                assert by_step[step] == value, (tag, step)
    # the TensorBoard run reads back as one: the uninterrupted run's train/loss, bit for bit
    assert values(first, "train/loss") == values(full, "train/loss")
