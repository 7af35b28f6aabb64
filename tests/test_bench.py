"""scripts/bench.py runs end to end and reports every figure (no timing assertions)."""

from __future__ import annotations

import json
import math
import subprocess

from conftest import ROOT


def _finite_positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_bench_quick_writes_every_figure(tmp_path, python):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [python, "scripts/bench.py", "--quick", "--repeats", "1", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lightning_vs_raw" in result.stdout  # the table is printed
    figures = json.loads(out.read_text())
    for key in ("lightning_vs_raw", "probe_vs_plain", "denormal_slowdown", "denormal_slowdown_without_flush"):
        assert _finite_positive(figures[key]), (key, figures[key])
    # Overheads are differences of noisy timings: finite, and above -100%, but may be negative.
    for key in ("amortized_overhead", "amortized_overhead_measured"):
        assert math.isfinite(figures[key]) and figures[key] > -1, (key, figures[key])
    assert set(figures["probe"]) == {"rnn", "lstm", "gru"}
    for row in figures["probe"].values():
        assert _finite_positive(row["plain_ms"]) and _finite_positive(row["auto_vs_plain"])
    assert len(figures["length_scaling"]) == 3
    for row in figures["length_scaling"].values():
        for key in ("step_ms", "time_per_step_vs_reference", "saved_mb", "memory_per_step_vs_reference"):
            assert _finite_positive(row[key]), (key, row)
    assert all(_finite_positive(v) for v in figures["step_ms_by_T"].values())
    assert {row["figure"] for row in figures["table"]} >= {"lightning_vs_raw", "probe_vs_plain"}
