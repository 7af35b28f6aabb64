"""The report on a real tiny sweep (checked against tbparse) and on synthetic runs with known values."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from tbparse import SummaryReader
from torch.utils.tensorboard import SummaryWriter

from rnnflow.report.build import build_report
from rnnflow.report.profiles import write_profiles
from rnnflow.report.runs import find_run_dirs, load_runs, parse_overrides
from rnnflow.report.table import differing_overrides, markdown_table, summarise

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BASE_COLUMNS = ["run", "steps", "val_loss", "baseline_loss", "loss_ratio", "solved"]
LAYER0_COLUMNS = [
    "layer0_log10_ratio_init",
    "layer0_log10_ratio_end",
    "layer0_zero_steps_init",
    "layer0_zero_steps_end",
    "layer0_radius_init",
    "layer0_radius_end",
]
TAIL_COLUMNS = ["clip_fraction", "nonfinite_events", "wall_time_s", "path"]


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC), path
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny runs (rnn, gru) with clipping on, through the real entry point."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    command = [
        sys.executable,
        "scripts/train.py",
        "-m",
        "debug=fast",
        "model.hidden_size=8",
        "task.seq_len=10",
        "clip.max_norm=2.0",
        "model=rnn,gru",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    return sweep_dir


@pytest.fixture(scope="module")
def report(sweep: Path) -> Path:
    out = sweep / "out"
    result = subprocess.run(
        [sys.executable, "scripts/report.py", str(sweep), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return out


def _tbparse_scalars(run_dir: Path) -> dict[str, pd.DataFrame]:
    frame = SummaryReader(str(run_dir / "tb"), extra_columns={"wall_time"}).scalars
    return {tag: group.sort_values("step") for tag, group in frame.groupby("tag")}


def test_csv_has_one_row_per_run_matching_the_event_files(sweep: Path, report: Path) -> None:
    table = pd.read_csv(report / "runs.csv", keep_default_na=False, na_values=[""])
    run_dirs = find_run_dirs(sweep)
    assert len(run_dirs) == 2 and len(table) == 2
    expected = ["run", "model", *BASE_COLUMNS[1:], *LAYER0_COLUMNS]
    expected += ["layer0_radius_gate_init", "layer0_radius_gate_end", *TAIL_COLUMNS]
    assert list(table.columns) == expected  # only `model` differs between the two runs
    assert list(table["model"]) == ["rnn", "gru"] and list(table["run"].astype(str)) == ["0", "1"]

    for run_dir, row in zip(run_dirs, table.itertuples(index=False), strict=True):
        assert row.path == run_dir.name
        scalars = _tbparse_scalars(run_dir)
        last = {tag: frame["value"].iloc[-1] for tag, frame in scalars.items()}
        assert row.steps == scalars["train/loss"]["step"].iloc[-1]
        assert row.val_loss == pytest.approx(last["val/loss"])
        assert row.baseline_loss == pytest.approx(last["val/baseline_loss"])
        assert row.loss_ratio == pytest.approx(last["val/loss"] / last["val/baseline_loss"])
        if "val/solved" in last:
            assert bool(row.solved) == (last["val/solved"] > 0.5)
        else:
            assert math.isnan(row.solved)
        ratio = scalars["grad_flow/layer0/log10_ratio"]["value"]
        assert row.layer0_log10_ratio_init == pytest.approx(ratio.iloc[0])
        assert row.layer0_log10_ratio_end == pytest.approx(ratio.iloc[-1])
        zeros = scalars["grad_flow/layer0/zero_steps"]["value"]
        assert (row.layer0_zero_steps_init, row.layer0_zero_steps_end) == (zeros.iloc[0], zeros.iloc[-1])
        radius_tags = [tag for tag in scalars if re.fullmatch(r"spectral/layer0/(\w/)?radius", tag)]
        assert len(radius_tags) == (1 if row.model == "rnn" else 3)
        for which, position in (("init", 0), ("end", -1)):
            values = {tag: scalars[tag]["value"].iloc[position] for tag in radius_tags}
            assert getattr(row, f"layer0_radius_{which}") == pytest.approx(max(values.values()))
            gate = getattr(row, f"layer0_radius_gate_{which}")
            if row.model == "rnn":
                assert pd.isna(gate)  # empty cell: no gates
            else:
                assert values[f"spectral/layer0/{gate}/radius"] == max(values.values())
        assert row.clip_fraction == pytest.approx(last["clip/fraction"])
        assert 0 <= row.clip_fraction <= 1
        assert row.nonfinite_events == pytest.approx(last["nonfinite/events"])
        walls = pd.concat([frame["wall_time"] for frame in scalars.values()])
        assert walls.max() - walls.min() <= row.wall_time_s < walls.max() - walls.min() + 120


def test_figures_are_png_and_linked_from_the_markdown(report: Path) -> None:
    markdown = (report / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert "loss_curves.png" in links and "grad_profiles_layer0.png" in links
    heatmaps = sorted((report / "heatmaps").glob("*.png"))
    assert [path.name for path in heatmaps] == ["0_layer0.png", "1_layer0.png"]
    assert {f"heatmaps/{path.name}" for path in heatmaps} <= set(links)
    for link in links:
        _assert_png(report / link)
    assert "| model=" not in markdown and "| rnn |" in markdown and "| gru |" in markdown
    assert "(image logged at step 9)" in markdown  # the last heatmap image of the 10-step runs


def test_single_run_lists_its_own_overrides(sweep: Path, tmp_path: Path) -> None:
    run_dir = find_run_dirs(sweep)[1]
    build_report(run_dir, tmp_path)
    table = pd.read_csv(tmp_path / "runs.csv", keep_default_na=False, na_values=[""])
    assert len(table) == 1
    for key in ("debug", "model.hidden_size", "task.seq_len", "clip.max_norm", "model"):
        assert key in table.columns
    assert table["model"].iloc[0] == "gru" and str(table["run"].iloc[0]) == "1"  # the job number
    assert table["path"].iloc[0] == run_dir.name


def _synthetic_run(run_dir: Path, overrides: list[str], solved: float, radius_scale: float) -> None:
    """A run directory written by hand: LSTM-like gates, two layers, no images, val/solved logged."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {item}\n" for item in overrides))
    writer = SummaryWriter(str(run_dir / "tb"))
    for step in (0, 50, 99):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
        for layer in (0, 1):
            writer.add_scalar(f"grad_flow/layer{layer}/log10_ratio", -step / 10 - layer, step)
            for gate, scale in zip("ifgo", (1.0, 2.0, 0.5, 1.5), strict=True):
                writer.add_scalar(
                    f"spectral/layer{layer}/{gate}/radius", radius_scale * scale * (1 + step), step
                )
            profile = {"hidden": 10.0 ** (np.arange(10) - 9) * (step + 1)}
            write_profiles(writer, "grad_flow", f"layer{layer}", step, profile)
    writer.add_scalar("val/loss", 0.05, 99)
    writer.add_scalar("val/baseline_loss", 0.2, 99)
    writer.add_scalar("val/solved", solved, 99)
    writer.close()


def test_synthetic_runs_known_values(tmp_path: Path) -> None:
    _synthetic_run(tmp_path / "a", ["model=lstm", "seed=0"], solved=1.0, radius_scale=1.0)
    _synthetic_run(tmp_path / "b", ["model=lstm", "seed=1"], solved=0.0, radius_scale=3.0)
    runs = load_runs(tmp_path)
    assert differing_overrides(runs) == ["seed"]
    table = summarise(runs)
    first, second = table.rows
    assert first["solved"] is True and second["solved"] is False
    assert first["loss_ratio"] == pytest.approx(0.25)
    assert first["layer1_log10_ratio_end"] == pytest.approx(-10.9)
    assert first["layer0_radius_init"] == pytest.approx(2.0) and first["layer0_radius_gate_init"] == "f"
    assert second["layer1_radius_end"] == pytest.approx(3.0 * 2.0 * 100)
    assert math.isnan(first["clip_fraction"]) and math.isnan(first["nonfinite_events"])
    assert "| yes |" in markdown_table(table) and "2.000 (f) → 200.000 (f)" in markdown_table(table)

    report = build_report(tmp_path)
    assert report == tmp_path / "report" / "report.md"
    heatmaps = sorted((tmp_path / "report" / "heatmaps").glob("*.png"))
    assert len(heatmaps) == 4  # two runs × two layers, drawn from the profile records
    for path in [*heatmaps, *(tmp_path / "report").glob("*.png")]:
        _assert_png(path)
    assert (tmp_path / "report" / "grad_profiles_layer1.png").is_file()
    assert "drawn from the profile records" in report.read_text()
    assert np.isfinite(runs[0].wall_time)


def test_overrides_parsing_and_missing_runs(tmp_path: Path) -> None:
    parsed = parse_overrides(["model=lstm", "+extra=1", "a.b=x=y"])
    assert parsed == {"model": "lstm", "extra": "1", "a.b": "x=y"}
    result = subprocess.run(
        [sys.executable, "scripts/report.py", str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2 and "no run directory" in result.stderr


@pytest.mark.parametrize(
    "break_it,why",
    [
        (
            lambda run: (run / "tb" / "events.out.tfevents.0.host.1").mkdir(),
            "an event file that is not a file",
        ),
        (
            lambda run: (run / ".hydra" / "overrides.yaml").write_text("- a=1\n  b: [\n"),
            "not readable as YAML",
        ),
        (
            lambda run: (run / ".hydra" / "overrides.yaml").write_text("a: 1\n"),
            "expected a YAML list of overrides",
        ),
        (
            lambda run: (run / ".hydra" / "hydra.yaml").write_text("- 1\n- 2\n"),
            "the document is not a mapping",
        ),
        (lambda run: (run / ".hydra" / "hydra.yaml").write_text("hydra: 3\n"), "hydra is not a mapping"),
        (lambda run: (run / ".hydra" / "hydra.yaml").write_bytes(b"\xff\xfe\x00"), "not readable as YAML"),
    ],
)
def test_malformed_run_is_skipped_with_one_warning_line(tmp_path: Path, break_it, why) -> None:
    _synthetic_run(tmp_path / "good", ["seed=0"], solved=1.0, radius_scale=1.0)
    _synthetic_run(tmp_path / "bad", ["seed=1"], solved=1.0, radius_scale=1.0)
    break_it(tmp_path / "bad")
    result = subprocess.run(
        [sys.executable, "scripts/report.py", str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("report: skipping run bad: "), warnings
    assert why in warnings[0]
    table = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert list(table["path"]) == ["good"]


def test_a_sweep_of_41_runs_reads_as_grouped_tables_with_verdicts(tmp_path: Path) -> None:
    """41 runs: one table per value of the first swept key, rows ordered by the others, verdicts."""
    cells, lengths = ("rnn", "lstm", "gru"), ("25", "50", "100", "200", "400", "800", "1600")
    jobs = [(cell, length, seed) for cell in cells for length in lengths for seed in (0, 1)][:41]
    for num, (cell, length, seed) in enumerate(jobs):
        run_dir = tmp_path / f"{num}_model={cell},task.seq_len={length},seed={seed}"
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
        overrides = [f"model={cell}", f"task.seq_len={length}", f"seed={seed}"]
        (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        with SummaryWriter(str(run_dir / "tb")) as writer:
            writer.add_scalar("train/loss", 0.1, 0)
            ratio = {"rnn": -int(length) / 10, "lstm": -1.0, "gru": 4.0}[cell]
            writer.add_scalar("grad_flow/layer0/log10_ratio", ratio, 0)
    report = build_report(tmp_path).read_text()
    assert "#### model=gru (13 runs)" in report and "#### model=rnn (14 runs)" in report
    gru = report[report.index("#### model=gru") : report.index("#### model=lstm")]
    order = re.findall(r"^\| [^|]+ \| (\d+) \| (\d) \|", gru, flags=re.M)
    assert order[:3] == [("25", "0"), ("25", "1"), ("50", "0")]  # the other keys, numerically
    assert "-80.00 → -80.00 (vanishing)" in report and "(exploding)" in gru
    assert "-1.00 → -1.00 |" in report  # no verdict within ±3 decades
