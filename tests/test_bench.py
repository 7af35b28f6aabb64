"""scripts/bench.py runs end to end and reports every figure (no timing assertions); its
figures agree with the raw measurements they are derived from, and its measuring helpers
measure known quantities exactly."""

from __future__ import annotations

import json
import math
import subprocess
import time

import lightning as L
import pytest
import torch
from conftest import ROOT

from benchmarks.timing import HookClock, peak_memory_bytes


def _finite_positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_bench_quick_writes_every_figure(tmp_path, python):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [python, "scripts/bench.py", "--quick", "--repeats", "1", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lightning_vs_raw" in result.stdout  # the table is printed
    figures = json.loads(out.read_text())
    for key in ("lightning_vs_raw", "probe_vs_plain", "denormal_slowdown", "denormal_slowdown_without_flush"):
        assert _finite_positive(figures[key]), (key, figures[key])
    assert set(figures["probe"]) == {"rnn", "lstm", "gru"}
    for row in figures["probe"].values():
        assert _finite_positive(row["plain_ms"]) and _finite_positive(row["auto_ms"])
        assert row["auto_vs_plain"] == pytest.approx(row["auto_ms"] / row["plain_ms"], rel=1e-12)
        assert row["plain_peak_bytes"] > 0 and row["auto_peak_bytes"] > 0
        assert row["auto_peak_vs_plain"] == pytest.approx(row["auto_peak_bytes"] / row["plain_peak_bytes"])
    # Derived figures, recomputed from the raw medians they come from.
    lstm = figures["probe"]["lstm"]
    assert figures["probe_vs_plain"] == pytest.approx(lstm["auto_ms"] / lstm["plain_ms"], rel=1e-12)
    expected = (lstm["auto_ms"] / lstm["plain_ms"] - 1) / figures["every_n_steps"]
    assert figures["amortized_overhead"] == pytest.approx(expected, rel=1e-12)
    amortized = figures["amortized"]
    assert amortized["decomposed_overhead"] == pytest.approx(
        amortized["per_step_overhead"] + amortized["probe_overhead"], rel=1e-12
    )
    assert amortized["probe_batch_vs_plain_batch"] == pytest.approx(
        amortized["probe_batch_ms"] / amortized["plain_batch_ms"], rel=1e-12
    )
    assert set(figures["length_scaling"]) == {"lstm", "gru"}
    lengths = figures["sizes"]["lengths"]
    reference = str(lengths[len(lengths) // 2])
    for rows in figures["length_scaling"].values():
        assert set(rows) == {str(t) for t in lengths}
        for length, row in rows.items():
            scale = int(reference) / int(length)
            for ms, ratio in (
                ("step_ms", "time_per_step_vs_reference"),
                ("probe_step_ms", "probe_time_per_step_vs_reference"),
                ("peak_mb", "peak_per_step_vs_reference"),
                ("probe_peak_mb", "probe_peak_per_step_vs_reference"),
                ("saved_mb", "memory_per_step_vs_reference"),
            ):
                assert _finite_positive(row[ms]), (ms, row)
                assert row[ratio] == pytest.approx(row[ms] / rows[reference][ms] * scale, rel=1e-9), ratio
            assert row["probe_vs_plain"] == pytest.approx(row["probe_step_ms"] / row["step_ms"], rel=1e-9)
    instruments = figures["instruments"]
    assert {"GradientFlowMonitor", "SpectralMonitor", "ClipMonitor"} <= set(instruments["callbacks"])
    for name in ("GradientFlowMonitor", "SpectralMonitor"):
        assert instruments["callbacks"][name]["probe_step_ms"] > 0, name
    for name in instruments["callbacks"]:
        assert f"{name} (hooks)" in result.stdout  # each instrument on its own line
    table = {row["figure"]: row for row in figures["table"]}
    assert table["probe_vs_plain"]["value"] == figures["probe_vs_plain"]
    for row in table.values():  # pass/fail agrees with the stated goal
        if row["goal"].startswith("<= "):
            assert (row["result"] == "pass") == (row["value"] <= float(row["goal"][3:])), row
        elif ".." in row["goal"]:
            low, high = (float(v) for v in row["goal"].split(".."))
            assert (row["result"] == "pass") == (low <= row["value"] <= high), row


def test_peak_memory_counts_known_allocations():
    """4 MB and 8 MB alive together, then 2 MB: the peak above the start is 12 MB exactly."""

    def run() -> None:
        first = torch.empty(1_000_000)
        second = torch.empty(2_000_000)
        del first
        third = torch.empty(500_000)
        del second, third

    assert peak_memory_bytes(run, torch.device("cpu")) == 12_000_000


def test_hook_clock_charges_each_callback_its_own_time(tmp_path):
    """A callback that sleeps 50 ms at batch 2 is charged that batch; one that does nothing is not."""

    class Sleeper(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx == 2:
                time.sleep(0.05)

    class Idle(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            pass

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=2)
    clock = HookClock(torch.device("cpu"))
    trainer = L.Trainer(
        max_steps=4, callbacks=[clock, Sleeper(), Idle()], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(Tiny(), data)
    sleeper, idle = clock.seconds["Sleeper"], clock.seconds["Idle"]
    assert sleeper[2] >= 0.05
    assert all(seconds < 0.05 for batch, seconds in sleeper.items() if batch != 2)
    assert set(idle) == {0, 1, 2, 3} and all(seconds < 0.05 for seconds in idle.values())


def test_gpu_check_dry_run(tmp_path, python):
    """benchmarks/gpu_check.py runs its whole sequence on the CPU at tiny sizes and writes its JSON."""
    out = tmp_path / "gpu_check"
    result = subprocess.run(
        [python, "-m", "benchmarks.gpu_check", "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    steps = {step["name"]: step for step in report["steps"]}
    assert list(steps) == [
        "tests", "default_gpu", "bf16_mixed", "16_mixed", "ddp_1_device", "autocast_exactness", "multirun",
        "bench",
    ]  # fmt: skip
    assert all(step["passed"] for step in steps.values())
    for name in ("default_gpu", "bf16_mixed", "16_mixed", "ddp_1_device"):
        assert steps[name]["figures"]["grad_flow_tags"] > 0, name
    for row in steps["autocast_exactness"]["figures"].values():
        assert row["max_relative_error"] <= row["tolerance"]
    assert len(steps["multirun"]["figures"]["jobs_with_last_checkpoint"]) == 2
    assert "probe_vs_plain/lstm" in steps["bench"]["figures"]
    assert "rnnflow GPU check on cpu (dry run): all passed" in result.stdout
