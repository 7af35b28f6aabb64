"""The benchmark runs and reports every figure (no timing assertions: timings are not tested)."""

from __future__ import annotations

import json
import math
import subprocess

from conftest import ROOT


def test_bench_quick_writes_every_figure(tmp_path, python):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [python, "scripts/bench.py", "--quick", "--repeats", "1", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    for key in ("lightning_vs_raw", "probe_vs_plain", "amortized_overhead", "denormal_slowdown"):
        assert math.isfinite(figures[key]) and figures[key] > 0
    assert set(figures["probe"]) == {"rnn", "lstm", "gru"}
    assert len(figures["length_scaling"]) == 3
