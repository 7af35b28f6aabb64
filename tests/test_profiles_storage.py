"""Full-resolution profiles in the event file: format round trip, what a run stores, its size."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, compose_config, read_scalars
from torch.utils.tensorboard import SummaryWriter

from rnnflow.report.profiles import event_files, load_profiles, record_bytes, write_profiles
from rnnflow.runtime.run import train

# Values a float32 backward produces deep in the vanishing regime, exact zeros, and a float64
# number no float32 could hold: all must come back bit for bit.
HARD = np.array([0.0, 1e-45, 1.2e-38, 1e-30, 3.5e-21, 1.0, 7.25e12, 1e-300, 5e-324])


def test_round_trip_is_exact_for_any_named_series(tmp_path):
    with SummaryWriter(str(tmp_path / "tb")) as writer:
        write_profiles(writer, "grad_flow", "layer0", 0, {"hidden": HARD, "cell": HARD[::-1]})
        write_profiles(writer, "grad_flow", "encoder.rnn/layer0_reverse", 7, {"hidden": HARD[:3]})
        # Another instrument adds its own series for the same layer and step: merged on load.
        write_profiles(writer, "activations", "layer0", 0, {"derivative_mean": np.full(HARD.size, 0.25)})
        write_profiles(writer, "grad_flow", "layer0", 100, {"hidden": np.arange(4.0), "cell": np.ones(4)})
    profiles = load_profiles(tmp_path)
    assert profiles.layers == ["encoder.rnn/layer0_reverse", "layer0"]
    record = profiles.at("layer0", 0)
    assert record.series["hidden"].dtype == np.float64
    assert record.series["hidden"].tobytes() == HARD.tobytes()
    assert record.series["cell"].tobytes() == HARD[::-1].tobytes()
    assert record.series["derivative_mean"].tolist() == [0.25] * HARD.size
    assert record.labels["hidden"] == "‖∂L/∂h_t‖"
    assert profiles.series_names("layer0") == ["hidden", "cell", "derivative_mean"]
    assert profiles.at("layer0").step == 100  # latest
    assert profiles.at("encoder.rnn/layer0_reverse", 7).series["hidden"].tolist() == HARD[:3].tolist()
    steps, matrix = profiles.matrix("layer0", "hidden")
    assert steps.tolist() == [0, 100]
    assert matrix.shape == (2, HARD.size)  # T differs: the shorter row is right-aligned, NaN-padded
    assert np.isnan(matrix[1, : HARD.size - 4]).all() and matrix[1, -4:].tolist() == [0, 1, 2, 3]


def test_series_of_different_lengths_are_refused(tmp_path):
    with SummaryWriter(str(tmp_path)) as writer, pytest.raises(ValueError, match="different lengths"):
        write_profiles(writer, "grad_flow", "layer0", 0, {"hidden": np.ones(3), "cell": np.ones(4)})


def test_a_resumed_run_reads_both_files_and_later_records_win(tmp_path):
    with SummaryWriter(str(tmp_path / "tb"), filename_suffix=".a") as writer:
        write_profiles(writer, "grad_flow", "layer0", 0, {"hidden": np.ones(3)})
        write_profiles(writer, "grad_flow", "layer0", 5, {"hidden": np.ones(3)})
    with SummaryWriter(str(tmp_path / "tb"), filename_suffix=".b") as writer:  # the resume's file
        write_profiles(writer, "grad_flow", "layer0", 5, {"hidden": np.full(3, 2.0)})
    assert len(event_files(tmp_path)) == 2
    profiles = load_profiles(tmp_path)
    assert profiles.steps("layer0").tolist() == [0, 5]
    assert profiles.at("layer0", 5).series["hidden"].tolist() == [2.0, 2.0, 2.0]


def test_a_run_stores_every_probe_at_full_resolution(tmp_path):
    overrides = [
        *TINY,
        "model=lstm",
        "model.num_layers=2",
        "trainer.max_steps=7",
        "diagnostics.every_n_steps=3",
    ]
    train(compose_config(*overrides, output_dir=tmp_path))
    profiles = load_profiles(tmp_path)
    assert profiles.layers == ["layer0", "layer1"]
    scalars = read_scalars(tmp_path)
    for layer in profiles.layers:
        assert profiles.steps(layer).tolist() == [0, 3, 6]
        for step in (0, 3, 6):
            record = profiles.at(layer, step)
            assert {"hidden", "cell"} <= set(record.series)  # other instruments add their own series
            hidden = record.series["hidden"]
            assert hidden.shape == (12,) and (hidden > 0).all()
            # Same numbers as the scalar summaries of that probe (float32 there).
            ratio = dict(scalars[f"grad_flow/{layer}/log10_ratio"])[step]
            assert math.log10(hidden[0] / hidden[-1]) == pytest.approx(ratio, rel=1e-5, abs=1e-6)
            for t in (0, 11):
                logged = dict(scalars[f"grad_flow/{layer}/profile_log10/t{t:04d}"])[step]
                assert logged == pytest.approx(math.log10(hidden[t]), abs=1e-6)


def test_stored_profile_matches_an_unrolled_float64_reference_deep_in_the_vanishing_regime(tmp_path):
    """tanh RNN with W_hh = 0.3·Q, T = 25: the gradient at t = 0 is ~1e-14 of the last step's."""
    import lightning as L
    from reference_cells import grads_of, unrolled_module

    from rnnflow.runtime.build import build_datamodule, build_module, build_task_from_config

    overrides = [*TINY, "model=rnn", "model.init.recurrent=orthogonal", "model.init.spectral_radius=0.3"]
    overrides.append("task.seq_len=25")
    one_probe = ["trainer.max_steps=1", "diagnostics.every_n_steps=1"]
    train(compose_config(*overrides, *one_probe, output_dir=tmp_path))
    stored = load_profiles(tmp_path).at("layer0", 0).series["hidden"]

    cfg = compose_config(*overrides, output_dir=tmp_path)
    L.seed_everything(cfg.seed, verbose=False)
    task = build_task_from_config(cfg)
    module = build_module(cfg, task).double()
    batch = build_datamodule(cfg, task).make_batch(0, 0, torch.device("cpu"))
    layer, states = module.model.layers[0], {}

    def unrolled(inputs, hx=None):  # the fused layer replaced by one autograd node per step
        output, final, hidden, _ = unrolled_module(layer, inputs, hx)
        states.update(hidden)
        return output, final

    layer.forward = unrolled
    targets = batch.targets.double() if batch.targets.is_floating_point() else batch.targets
    task.loss(module.model(batch.inputs.double()), targets).backward()
    expected = grads_of(states["rnn/layer0"]).flatten(1).norm(dim=1).numpy()
    assert 0 < stored[0] < 1e-12 * stored[-1]
    np.testing.assert_allclose(stored, expected, rtol=2e-3)


def test_truncated_bptt_stores_exact_zeros(tmp_path):
    overrides = [*TINY, "model=rnn", "tbptt.chunk=4", "trainer.max_steps=1", "diagnostics.every_n_steps=1"]
    train(compose_config(*overrides, output_dir=tmp_path))
    hidden = load_profiles(tmp_path).at("layer0", 0).series["hidden"]
    assert hidden.size == 12
    assert (hidden[:8] == 0.0).all() and (hidden[8:] > 0).all()


def test_record_size_is_as_documented(tmp_path):
    """One record = 8·S·T bytes of payload + < 320 bytes; the file grows by exactly that."""
    for names, length in ((["hidden"], 50), (["hidden", "cell"], 50), (["hidden", "cell"], 1000)):
        size = record_bytes(names, length)
        assert 8 * len(names) * length < size < 8 * len(names) * length + 320
    with SummaryWriter(str(tmp_path)) as writer:
        writer.flush()
        before = sum(path.stat().st_size for path in Path(tmp_path).glob("events*"))
        for step in range(10):
            write_profiles(
                writer, "grad_flow", "layer0", step * 100, {"hidden": np.ones(50), "cell": np.ones(50)}
            )
        writer.flush()
        after = sum(path.stat().st_size for path in Path(tmp_path).glob("events*"))
    assert after - before == pytest.approx(10 * record_bytes(["hidden", "cell"], 50), abs=10 * 4)


@pytest.mark.slow
def test_a_default_run_stays_under_the_documented_event_file_bound(tmp_path):
    """The default experiment (2,000 steps): all its event files together stay under 1 MB (README)."""
    import subprocess
    import sys

    from conftest import ROOT

    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "scripts/train.py", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    size = sum(path.stat().st_size for path in event_files(run_dir))
    profiles = load_profiles(run_dir)
    assert len(profiles) == 21  # steps 0, 100, …, 1900 and the last, 1999
    assert size < 1_000_000, size
