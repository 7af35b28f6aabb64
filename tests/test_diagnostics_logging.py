"""End to end: what the callbacks write to TensorBoard, clipping and the non-finite policy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, compose_config, read_scalars

from rnnflow.runtime.run import train


def run(tmp_path: Path, *overrides: str) -> tuple[dict[str, float], Path]:
    return train(compose_config(*TINY, *overrides, output_dir=tmp_path)), tmp_path


scalars = read_scalars


@pytest.mark.parametrize("model,gates", [("rnn", None), ("lstm", "ifgo"), ("gru", "rzn")])
def test_tags_of_the_contract(tmp_path, model, gates):
    _, out = run(
        tmp_path,
        f"model={model}",
        "model.num_layers=2",
        "trainer.max_steps=7",
        "diagnostics.every_n_steps=3",
        "diagnostics.spectral_every_n_steps=3",
    )
    tags = scalars(out)
    probe_steps = [0, 3, 6]  # every 3 steps and the last step
    for layer in ("layer0", "layer1"):
        for name in ("log10_ratio", "decay_rate", "horizon", "profile_log10/t0000", "profile_log10/t0011"):
            assert [s for s, _ in tags[f"grad_flow/{layer}/{name}"]] == probe_steps
        norm_tags = [t for t in tags if t.startswith(f"grad_flow/{layer}/profile_log10/t")]
        assert 7 <= len(norm_tags) <= 9
        assert ("grad_flow/" + layer + "/cell_log10_ratio" in tags) == (model == "lstm")
        for gate in gates or [None]:
            prefix = f"spectral/{layer}/" + (f"{gate}/" if gate else "")
            assert [s for s, _ in tags[prefix + "radius"]] == probe_steps
            assert tags[prefix + "norm"][0][1] >= tags[prefix + "radius"][0][1] - 1e-6
    assert [s for s, _ in tags["clip/pre_norm"]] == list(range(7))
    assert [s for s, _ in tags["train/loss"]] == list(range(7))


def test_logged_profile_is_the_probe_of_that_step(tmp_path):
    """The profile_log10 tags of step 0 equal a probe of the initial model on batch 0 (independent run)."""
    import lightning as L

    from rnnflow.probes.gradient_flow import GradientFlowProbe
    from rnnflow.runtime.build import build_datamodule, build_module, build_task_from_config

    _, out = run(tmp_path, "model=gru", "trainer.max_steps=1", "diagnostics.every_n_steps=1")
    cfg = compose_config(*TINY, "model=gru", output_dir=tmp_path)
    L.seed_everything(cfg.seed, verbose=False)
    task = build_task_from_config(cfg)
    module = build_module(cfg, task)
    batch = build_datamodule(cfg, task).make_batch(0, 0, torch.device("cpu"))
    probe = GradientFlowProbe()
    with probe.attach(module.model):
        loss = task.loss(module.model(batch.inputs), batch.targets)
    loss.backward()
    profile = probe.gradient_flow()["layers/layer0"].hidden
    tags = scalars(out)
    for t in (0, 4, 8, 11):
        logged = tags[f"grad_flow/layer0/profile_log10/t{t:04d}"][0][1]
        assert logged == pytest.approx(math.log10(float(profile[t])), abs=1e-5)


def test_clipping_events_are_counted(tmp_path):
    _, out = run(tmp_path, "model=rnn", "trainer.max_steps=6", "clip.max_norm=1e-3", "clip.algorithm=norm")
    tags = scalars(out)
    pre = [v for _, v in tags["clip/pre_norm"]]
    post = [v for _, v in tags["clip/post_norm"]]
    assert all(p > 1e-3 for p in pre)
    assert post == pytest.approx([1e-3] * 6, rel=1e-4)
    assert [v for _, v in tags["clip/clipped"]] == [1.0] * 6
    assert [v for _, v in tags["clip/events"]] == [1, 2, 3, 4, 5, 6]
    assert [v for _, v in tags["clip/fraction"]] == [1.0] * 6


def first_step_gradients(tmp_path: Path, *overrides: str) -> list[torch.Tensor]:
    """The parameter gradients of step 0 (initial weights, batch 0), computed outside any callback."""
    import lightning as L

    from rnnflow.runtime.build import build_datamodule, build_module, build_task_from_config

    cfg = compose_config(*TINY, *overrides, output_dir=tmp_path)
    L.seed_everything(cfg.seed, verbose=False)
    task = build_task_from_config(cfg)
    module = build_module(cfg, task)
    batch = build_datamodule(cfg, task).make_batch(0, 0, torch.device("cpu"))
    task.loss(module.model(batch.inputs), batch.targets).backward()
    return [p.grad for p in module.parameters() if p.grad is not None]


def test_clipping_off_logs_the_gradient_norm_only(tmp_path):
    _, out = run(tmp_path / "off", "trainer.max_steps=3")
    tags = scalars(out)
    assert not {"clip/post_norm", "clip/clipped", "clip/events", "clip/fraction"} & set(tags)
    expected = float(
        torch.linalg.vector_norm(torch.cat([g.flatten() for g in first_step_gradients(tmp_path)]))
    )
    assert tags["clip/pre_norm"][0][1] == pytest.approx(expected, rel=1e-5)


def test_value_clipping(tmp_path):
    _, out = run(tmp_path / "value", "trainer.max_steps=3", "clip.max_norm=1e-4", "clip.algorithm=value")
    tags = scalars(out)
    assert [v for _, v in tags["clip/clipped"]] == [1.0] * 3
    grads = torch.cat([g.flatten() for g in first_step_gradients(tmp_path)])
    expected = float(torch.linalg.vector_norm(grads.clamp(-1e-4, 1e-4)))
    assert tags["clip/post_norm"][0][1] == pytest.approx(expected, rel=1e-5)
    assert tags["clip/pre_norm"][0][1] == pytest.approx(float(torch.linalg.vector_norm(grads)), rel=1e-5)


def test_lightning_gradient_clip_val_is_applied_and_observed(tmp_path):
    """``trainer.gradient_clip_val``: Lightning clips, ClipMonitor logs the events (same tags)."""
    clipped_run = ("model=rnn", "optim=sgd", "optim.lr=1.0", "trainer.max_steps=4")
    _, out = run(tmp_path, *clipped_run, "+trainer.gradient_clip_val=1e-3")
    tags = scalars(out)
    assert [v for _, v in tags["clip/clipped"]] == [1.0] * 4
    assert [v for _, v in tags["clip/post_norm"]] == pytest.approx([1e-3] * 4, rel=1e-4)
    assert [v for _, v in tags["clip/events"]] == [1, 2, 3, 4]
    # Applied, not only observed: with SGD (lr = 1) the first update differs from an unclipped run's,
    # so the second step's gradient differs while the first's is the same.
    _, free = run(tmp_path / "free", *clipped_run)
    free_pre = [v for _, v in scalars(free)["clip/pre_norm"]]
    assert free_pre[0] == pytest.approx(tags["clip/pre_norm"][0][1], rel=1e-6)
    assert abs(free_pre[1] - tags["clip/pre_norm"][1][1]) > 1e-3 * free_pre[1]


EXPLODING = [
    "model=rnn",
    "model.init.recurrent=normal",
    "model.init.std=30",
    "optim.lr=1e6",
    "model.nonlinearity=relu",
]


def test_nonfinite_steps_are_skipped_then_the_run_stops(tmp_path):
    stop_at_3 = ["nonfinite.max_consecutive=3", "checkpoint.every_n_steps=1"]
    metrics, out = run(tmp_path, *EXPLODING, "trainer.max_steps=40", *stop_at_3)
    tags = scalars(out)
    events = [v for _, v in tags["nonfinite/events"]]
    assert events[-1] >= 3
    assert len(events) < 40  # stopped early
    # the loss is not finite from the first step on: no state of this run is good, none is kept
    assert not math.isfinite(tags["train/loss"][0][1])
    assert not (out / "checkpoints" / "last.ckpt").exists()
    assert not list((out / "checkpoints").iterdir())  # no temporary or pending file either
    assert "val/loss" in metrics


def test_nonfinite_policy_raise(tmp_path):
    with pytest.raises(FloatingPointError, match="nonfinite.policy=raise"):
        run(tmp_path, *EXPLODING, "trainer.max_steps=40", "nonfinite.policy=raise")


@pytest.mark.parametrize("model", ["rnn", "lstm", "gru"])
def test_truncated_bptt_shows_the_truncation(tmp_path, model):
    """Adding problem, T = 12, chunks of 5: only the last chunk (t = 10, 11) gets a gradient.

    The first two chunks have no loss term, so their probed calls get no gradient at all.
    """
    _, out = run(
        tmp_path, f"model={model}", "tbptt.chunk=5", "trainer.max_steps=3", "diagnostics.every_n_steps=1"
    )
    tags = scalars(out)
    assert tags["grad_flow/layer0/horizon"][0][1] == 1
    assert "grad_flow/layer0/profile_log10/t0000" not in tags  # exactly 0: no log10 point (see the record)
    assert np.isfinite(tags["grad_flow/layer0/profile_log10/t0011"][0][1])
    assert [s for s, _ in tags["train/loss"]] == [0, 1, 2]


def test_truncated_bptt_steps_once_per_chunk(tmp_path):
    """Copy, T + 20 = 32 steps in chunks of 8: 4 optimizer steps per sequence."""
    _, out = run(tmp_path, "task=copy", "tbptt.chunk=8", "trainer.max_steps=8", "clip.max_norm=1e-6")
    tags = scalars(out)
    assert [s for s, _ in tags["train/loss"]] == [0, 1]  # 8 optimizer steps = 2 sequences
    assert [v for _, v in tags["clip/events"]] == [4, 8]
    assert [v for _, v in tags["clip/fraction"]] == [1.0, 1.0]
