"""Exactly-zero steps in the logged tags, the pictures and the report: drawn and counted, never blank."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, compose_config, read_scalars
from matplotlib.colors import to_rgba
from torch.utils.tensorboard import SummaryWriter

from rnnflow.report import plots
from rnnflow.report.figures import (
    MISSING_COLOUR,
    ZERO_COLOUR,
    ZERO_LABEL,
    bin_profile,
    heatmap_figure,
    profile_figure,
    theory_lines,
)
from rnnflow.report.profiles import write_profiles
from rnnflow.report.runs import load_runs
from rnnflow.report.table import markdown_table, summarise, write_csv


def _legend_texts(axes) -> list[str]:
    legend = axes.get_legend()
    return [text.get_text() for text in legend.get_texts()] if legend is not None else []


def test_profile_figure_draws_zero_steps_and_theory_lines():
    profile = np.array([0.0, 0.0, 0.0, 1e-30, 1e-20, 1e-10, 1.0])
    healthy = np.geomspace(1e-3, 1.0, 7)
    fits = [(1e-10, 1.0), (3.16, 1.0)]
    lines = theory_lines([profile, healthy], fits, [(0.3, 0.2), None])
    assert list(lines) == ["bound γ‖W_hh‖₂", "linear regime γρ(W_hh)", "α (fit)"]
    assert lines["bound γ‖W_hh‖₂"][0] == (0.3, 1.0) and lines["bound γ‖W_hh‖₂"][1] is None
    figure = profile_figure([profile, healthy], "title", lines)
    axes = figure.axes[0]
    zero_lines = [line for line in axes.get_lines() if ZERO_LABEL in line.get_label()]
    assert len(zero_lines) == 1  # only layer0 has zero steps
    assert list(zero_lines[0].get_xdata()) == [0, 1, 2]
    assert zero_lines[0].get_color() == ZERO_COLOUR
    low, _ = axes.get_ylim()
    assert all(low < y < -30 for y in zero_lines[0].get_ydata())  # in a strip below every curve
    texts = _legend_texts(axes)
    assert f"layer0: {ZERO_LABEL} (3 steps)" in texts
    assert "layer0: bound γ‖W_hh‖₂ = 0.3" in texts and "layer0: linear regime γρ(W_hh) = 0.2" in texts
    assert not any(text.startswith("layer1: bound") for text in texts)


def test_profile_figure_without_zero_steps_has_no_zero_entry():
    figure = profile_figure([np.geomspace(1e-3, 1.0, 9)], "title", {"α (fit)": [(2.37, 1.0)]})
    assert not any(ZERO_LABEL in text for text in _legend_texts(figure.axes[0]))


def test_heatmap_paints_every_cell():
    profiles = np.array(
        [
            [1e-3, 1e-2, 1.0, 1.0],
            [0.0, 0.0, 1e-1, 1.0],
            [np.nan, 1e-2, 1.0, 0.0],  # a missing value, and a last step that is exactly zero
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    figure = heatmap_figure([0, 10, 20, 30], profiles, "title")
    axes = figure.axes[0]
    values, zeros = axes.get_images()
    relative = values.get_array()
    zero_cells = ~np.ma.getmaskarray(zeros.get_array())
    assert (zero_cells == (profiles == 0)).all()
    assert to_rgba(zeros.get_cmap()(0.5)) == to_rgba(ZERO_COLOUR)
    assert to_rgba(values.get_cmap().get_bad()) == to_rgba(MISSING_COLOUR)
    painted = ~np.ma.getmaskarray(relative) | zero_cells | np.isnan(profiles)
    assert painted.all()
    # relative to each row's last non-zero step: row 2 ends at t = 2
    assert relative[2, 1] == pytest.approx(-2.0) and relative[1, 2] == pytest.approx(-1.0)
    assert set(_legend_texts(axes)) == {ZERO_LABEL, "no value logged"}


def test_bin_profile_keeps_zeros_and_tiny_values():
    profile = np.concatenate([np.zeros(10), np.full(10, 1e-200), [3.0, 4.0] * 5])
    binned = bin_profile(profile, 3)
    assert binned[0] == 0.0
    assert binned[1] == pytest.approx(1e-200, rel=1e-12)  # squared, 1e-400 would underflow to 0
    assert binned[2] == pytest.approx(math.sqrt(12.5))


def _run_with_zero_steps(run_dir: Path, seed: int, legacy: bool) -> None:
    """A hand-written run: layer0's first steps exactly zero; ``legacy``: -inf as logged before."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run_dir / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n")
    writer = SummaryWriter(str(run_dir / "tb"))
    for step, zeros in ((0, 3), (10, 2)):
        writer.add_scalar("train/loss", 1.0, step)
        profile = np.array(
            [0.0, 1e-30, 1e-28, 0.0 if zeros == 3 else 1e-25, 0.0, 1e-22, 1e-20, 1e-5, 1e-2, 1.0]
        )
        write_profiles(writer, "grad_flow", "layer0", step, {"hidden": profile})
        writer.add_scalar("grad_flow/layer0/log10_ratio", -math.inf if legacy else -20.0, step)
        if not legacy:
            writer.add_scalar("grad_flow/layer0/zero_steps", zeros, step)
    writer.close()


def test_report_prints_and_draws_zero_steps(tmp_path, monkeypatch):
    _run_with_zero_steps(tmp_path / "new", seed=0, legacy=False)
    _run_with_zero_steps(tmp_path / "old", seed=1, legacy=True)
    runs = load_runs(tmp_path)
    table = summarise(runs)
    assert "layer0_zero_steps_init" in table.columns
    new, old = sorted(table.rows, key=lambda row: row["seed"])
    assert (new["layer0_zero_steps_init"], new["layer0_zero_steps_end"]) == (3, 2)
    assert math.isnan(old["layer0_zero_steps_init"])
    text = markdown_table(table)
    assert "-20.00 (3 steps 0) → -20.00 (2 steps 0)" in text
    assert "−∞ → −∞" in text and "-inf" not in text
    write_csv(table, tmp_path / "runs.csv")

    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda figure, path: drawn.setdefault("figure", figure) and path)
    labels = [f"seed={row.overrides['seed']}" for row in runs]
    plots.plot_profiles(runs, labels, 0, tmp_path / "profiles.png")
    for panel in drawn["figure"].axes:
        zero_markers = [
            line for line in panel.get_lines() if line.get_marker() == "v" and len(line.get_xdata())
        ]
        assert len(zero_markers) == 2  # one row per run
        assert {tuple(line.get_xdata()) for line in zero_markers} <= {(0, 3, 4), (0, 4)}
        assert all(to_rgba(line.get_markerfacecolor()) == to_rgba(ZERO_COLOUR) for line in zero_markers)
        assert any(ZERO_LABEL in text for text in _legend_texts(panel))


@pytest.mark.parametrize("model", ["rnn", "lstm"])
def test_truncated_bptt_logs_zero_steps(tmp_path, model):
    """T = 12 in chunks of 5, loss at the end: the 10 steps before the last chunk get exactly 0."""
    from rnnflow.runtime.run import train

    cfg = compose_config(
        *TINY,
        f"model={model}",
        "tbptt.chunk=5",
        "trainer.max_steps=2",
        "diagnostics.every_n_steps=1",
        "diagnostics.figure_every_n_steps=1",
        output_dir=tmp_path,
    )
    train(cfg)
    tags = read_scalars(tmp_path)
    assert [value for _, value in tags["grad_flow/layer0/zero_steps"]] == [10.0, 10.0]
    for step, value in tags["grad_flow/layer0/log10_ratio"]:
        log_n10 = dict(tags["grad_flow/layer0/profile_log10/t0010"])[step]
        log_n11 = dict(tags["grad_flow/layer0/profile_log10/t0011"])[step]
        assert value == pytest.approx(log_n10 - log_n11, abs=1e-5)  # over the span t = 10 … 11
    assert all(math.isfinite(v) for _, v in tags["grad_flow/layer0/decay_rate"])
    if model == "lstm":
        assert [value for _, value in tags["grad_flow/layer0/cell_zero_steps"]] == [10.0, 10.0]
