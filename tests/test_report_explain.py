"""Report sections of the explanatory instruments: why table, depth table, verdicts, and what
scripts/report.py prints."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY, compose_config
from omegaconf import OmegaConf

from rnnflow.report.build import build_report
from rnnflow.runtime.run import train


def _hydra_like_run(run_dir: Path, overrides: list[str]) -> None:
    """Train in-process and leave what a Hydra job leaves beside its events (config, overrides)."""
    cfg = compose_config(*TINY, *overrides, output_dir=run_dir)
    train(cfg)
    (run_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("explain_sweep")
    closed_form = [
        "model=rnn",
        "model.init.recurrent=orthogonal",
        "model.init.input=zeros",
        "model.init.bias=zeros",
    ]
    for index, rho in enumerate((0.8, 1.25)):
        overrides = [
            *closed_form,
            f"model.init.spectral_radius={rho}",
            "task.seq_len=40",
            "trainer.max_steps=1",
        ]
        _hydra_like_run(root / f"{index}_rho", overrides)
    for index, seed in enumerate((0, 1)):
        overrides = ["model=rnn", "model.num_layers=3", f"seed={seed}", "trainer.max_steps=1"]
        _hydra_like_run(root / f"{index + 2}_depth", overrides)
    return root


def test_why_table_puts_log_rho_lyapunov_and_log_alpha_side_by_side(sweep, tmp_path):
    text = build_report(sweep, tmp_path).read_text()
    why = text.split("## Why it vanishes", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in why.splitlines() if line.startswith("| ") and "rho" in line]
    assert len(rows) == 2
    for row, rho in zip(rows, (0.8, 1.25), strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        header = [c.strip() for c in why.splitlines()[2].strip("|").split("|")]
        values = dict(zip(header, cells, strict=True))
        for column in ("ln ρ(W_hh) (init)", "ln α (init)", "λ₁ (init)"):
            assert float(values[column]) == pytest.approx(math.log(rho), abs=1e-3), column
        assert float(values["log10 ratio (init)"]) == pytest.approx(39 * math.log10(rho), abs=1e-2)


def test_depth_table_is_the_median_over_seeds(sweep, tmp_path):
    text = build_report(sweep, tmp_path).read_text()
    depth = text.split("## Gradient through depth", 1)[1].split("\n## ", 1)[0]
    row = next(line for line in depth.splitlines() if "model.num_layers=3" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "2"  # two seeds
    assert float(cells[4]) == 1.0  # layer2 / top


def test_report_prints_tables_and_verdicts(sweep, tmp_path):
    result = subprocess.run(
        [sys.executable, "scripts/report.py", str(sweep), "--out", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for section in ("## Why it vanishes", "## Gradient through depth", "## Verdicts"):
        assert section in result.stdout
    assert "layer0: exploding through time (log10 ratio 3.78" in result.stdout  # ρ = 1.25: 39·log10 1.25
    assert "layer0: vanishing through time (log10 ratio -3.78" in result.stdout  # ρ = 0.8
