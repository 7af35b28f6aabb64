"""Benchmark: what rnnflow's training step and its gradient-flow probes cost, side by side.

    python scripts/bench.py [--device cpu|cuda] [--repeats 5] [--quick] [--json bench.json] [--profile]
                            [--only probe,phases,...] [--cells lstm,...]

Every comparison runs its variants in this one process, interleaved (A B, B A, …, after a
warm-up), and reports medians, so that drift and other processes hit every variant alike.
Sizes: CPU LSTM H=128, B=64, T=1000; GPU H=256, B=128, T=1000 (``--quick``: tiny sizes,
a smoke test, not a measurement). Figures (ratios: > 1 means slower, unless stated):

* ``lightning_vs_raw``: throughput (batches/s) of a real ``Trainer.fit`` of the rnnflow
  LightningModule (diagnostics, logger and checkpoints off) over that of a hand-written loop
  with the same fused module, Adam and batches. Goal ≥ 0.97 (CPU), ≥ 1/1.1 (GPU, cuDNN).
* ``probe_vs_plain``: a probed training step (exact ∂L/∂h_t at every t: forward, backward,
  ``probe.gradient_flow()``, optimizer step) over a plain one, LSTM, ``auto`` route. Goal
  ≤ 1.3 (CPU; RNN ≤ 1.0), ≤ 1.2 (GPU). ``probe_peak_vs_plain``: the peak memory allocated
  during a probed step over that of a plain one (goal ≤ 1.5), bytes in the JSON.
  ``probe`` has every cell and route; ``probe_phases`` the split
  into forward / backward / gradient_flow / optimizer (``--profile``: torch.profiler's top ops).
* ``amortized_overhead``: (probe − plain) / (every_n_steps · plain), at the default
  ``diagnostics.every_n_steps`` of conf/train.yaml. Goal ≤ 1%. ``amortized_overhead_measured``:
  Lightning runs (smaller model) with every diagnostics callback on over the same runs with
  them off, over a window holding a whole number of probe intervals.
* ``length_scaling`` (LSTM, GRU): plain and probed step time, peak memory and saved activations
  per step of T at T = 250, 1000, 4000, relative to T = 1000 (goal: within 10% of 1), and the
  probed step over the plain one at each T (goal as ``probe_vs_plain``).
* ``instruments``: what each instrument costs on probe steps, by name, in a Lightning run of the
  default config (LSTM, smaller model): the gradient-flow probe inside the step, and each
  callback's hooks (gradient flow, spectra, clipping, ...), per probe step and per other step.
* ``denormal_slowdown``: a vanishing model (ρ = 0.5) over a healthy one (ρ = 1), worst of
  rnn and lstm, with rnnflow's flush-to-zero. Goal ≤ 1.1. ``denormal_slowdown_without_flush``:
  the same with flush-to-zero off (why it is on).
* ``host_memory_speedup`` (CPU, informational): a plain LSTM step with freed host memory
  returned to the kernel (glibc's default) over one with it kept in the process (rnnflow's
  default, ``cpu_keep_freed_memory``), each in fresh processes, and the minor page faults per
  step of each (why it is on).

Every section runs with rnnflow's CPU defaults (flush-to-zero, freed memory kept) on both sides
of each comparison, the hand-written loop included.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/ lives beside the package, not inside it: make it importable from a checkout.
sys.path.insert(0, str(ROOT))

from benchmarks.suite import (  # noqa: E402
    CELLS,
    BenchSizes,
    bench_amortized_measured,
    bench_denormal,
    bench_explain,
    bench_host_memory,
    bench_instruments,
    bench_lengths,
    bench_lightning_vs_raw,
    bench_probe,
    default_every_n_steps,
    probe_phases,
    profile_probed_step,
    quiet_lightning,
)
from benchmarks.timing import load_average  # noqa: E402
from rnnflow.runtime.host_settings import apply_host_settings  # noqa: E402

SECTIONS = (
    "probe", "phases", "instruments", "lightning", "amortized", "lengths", "denormal", "host_memory",
    "explain",
)  # fmt: skip


def git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def goals_for(device: torch.device) -> dict[str, tuple[str, float, float | None]]:
    """``{figure: (sense, goal, upper bound for 'within')}``."""
    gpu = device.type == "cuda"
    probe_goal = 1.2 if gpu else 1.3
    return {
        "lightning_vs_raw": (">=", 1 / 1.1 if gpu else 0.97, None),
        "probe_vs_plain": ("<=", probe_goal, None),
        "probe_vs_plain/lstm": ("<=", probe_goal, None),
        "probe_vs_plain/gru": ("<=", probe_goal, None),
        "probe_vs_plain/rnn": ("<=", probe_goal if gpu else 1.0, None),
        "probe_peak_vs_plain": ("<=", 1.5, None),
        "amortized_overhead": ("<=", 0.01, None),
        "amortized_overhead_measured": ("<=", 0.01, None),
        "time_per_T": ("within", 0.9, 1.1),
        "memory_per_T": ("within", 0.9, 1.1),
        "denormal_slowdown": ("<=", 1.1, None),
        "explain_overhead": ("<=", 0.10, None),
    }


def check(value: float, sense: str, goal: float, upper: float | None) -> bool:
    if sense == ">=":
        return value >= goal
    if sense == "<=":
        return value <= goal
    return goal <= value <= upper


def table_rows(figures: dict[str, Any], device: torch.device) -> list[tuple[str, float, str, str]]:
    """``(name, value, goal, pass)`` for every figure with a goal, and the informational ones."""
    goals = goals_for(device)
    values: dict[str, float] = {}
    for key in ("lightning_vs_raw", "probe_vs_plain", "amortized_overhead", "amortized_overhead_measured"):
        if key in figures:
            values[key] = figures[key]
    for cell in ("lstm", "gru", "rnn"):
        if cell in figures.get("probe", {}):
            values[f"probe_vs_plain/{cell}"] = figures["probe"][cell]["auto_vs_plain"]
    rows = []
    for name, value in values.items():
        sense, goal, upper = goals[name]
        rows.append(
            (name, value, f"{sense} {goal:.3g}", "pass" if check(value, sense, goal, upper) else "FAIL")
        )
    sense, goal, upper = goals["probe_peak_vs_plain"]
    for cell, row in figures.get("probe", {}).items():
        value = row["auto_peak_vs_plain"]
        rows.append(
            (f"probe_peak_vs_plain/{cell}", value, f"{sense} {goal:.3g}", "pass" if value <= goal else "FAIL")
        )
    for cell, by_length in figures.get("length_scaling", {}).items():
        for length, row in by_length.items():
            sense, goal, upper = goals["probe_vs_plain/" + cell]
            value = row["probe_vs_plain"]
            ok = check(value, sense, goal, upper)
            result = "pass" if ok else "FAIL"
            rows.append((f"probe_vs_plain/{cell}/T={length}", value, f"{sense} {goal:.3g}", result))
            for key, label in (
                ("time_per_step_vs_reference", "time_per_T"),
                ("probe_time_per_step_vs_reference", "probe_time_per_T"),
                ("memory_per_step_vs_reference", "memory_per_T"),
                ("peak_per_step_vs_reference", "peak_per_T"),
                ("probe_peak_per_step_vs_reference", "probe_peak_per_T"),
            ):
                sense, goal, upper = goals["time_per_T" if "time" in label else "memory_per_T"]
                value = row[key]
                ok = check(value, sense, goal, upper)
                result = "pass" if ok else "FAIL"
                rows.append((f"{cell}/{label}/T={length}", value, f"{goal:.2f}..{upper:.2f}", result))
    if "denormal_slowdown" in figures:
        sense, goal, upper = goals["denormal_slowdown"]
        value = figures["denormal_slowdown"]
        rows.append(
            (
                "denormal_slowdown",
                value,
                f"{sense} {goal:.3g}",
                "pass" if check(value, sense, goal, upper) else "FAIL",
            )
        )
    for key in ("denormal_slowdown_without_flush", "host_memory_speedup"):
        if key in figures:
            rows.append((key, figures[key], "(info)", "-"))
    if "explain_overhead" in figures:
        sense, goal, upper = goals["explain_overhead"]
        value = figures["explain_overhead"]
        rows.append(
            (
                "explain_overhead",
                value,
                f"{sense} {goal:.3g}",
                "pass" if check(value, sense, goal, upper) else "FAIL",
            )
        )
    for cell, row in figures.get("explain", {}).items():  # each instrument on its own line
        for key, value in row.items():
            if key.endswith("_vs_probe") and key != "all_in_step_vs_probe":
                rows.append(
                    (f"explain/{cell}/{key.removesuffix('_vs_probe')}", value, "(share of probe step)", "-")
                )
    return rows


def print_report(figures: dict[str, Any], rows: list[tuple[str, float, str, str]]) -> None:
    env = figures["environment"]
    print(
        f"\nrnnflow bench: {env['device']}, torch {env['torch']}, commit {env['commit']}, "
        f"load {env['load_before']} -> {env['load_after']}, {env['elapsed_s']:.0f} s"
    )
    print(f"sizes: {figures['sizes']}, repeats {figures['repeats']}")
    print(f"load (1, 5, 15 min) as each section started: {env['load_at_section_start']}")
    print(f"\n{'figure':36s} {'value':>9s}  {'goal':>12s}  result")
    for name, value, goal, result in rows:
        print(f"{name:36s} {value:9.4f}  {goal:>12s}  {result}")
    if "probe" in figures:
        print("\nprobed step / plain step (T, H, B as in sizes):")
        for cell, row in figures["probe"].items():
            ratios = ", ".join(
                f"{k.removesuffix('_vs_plain')} {v:.3f}x"
                for k, v in row.items()
                if k.endswith("_vs_plain") and "peak" not in k
            )
            print(f"  {cell:4s} plain {row['plain_ms']:7.1f} ms; auto = {row['auto_route']}; {ratios}")
        print("peak memory of a step (allocated above the step's start), plain -> probed (auto):")
        for cell, row in figures["probe"].items():
            plain, probed = row["plain_peak_bytes"], row["auto_peak_bytes"]
            print(
                f"  {cell:4s} {plain / 2**20:8.1f} MB -> {probed / 2**20:8.1f} MB: extra "
                f"{probed - plain:+,d} bytes, {row['auto_peak_vs_plain']:.2f}x"
            )
    if "probe_phases" in figures:
        phases = figures["probe_phases"]
        print(f"\nphases of a {phases['cell']} step, ms (probe route {phases['route']}):")
        print(f"  {'phase':14s} {'plain':>8s} {'probed':>8s} {'extra':>8s}")
        for phase in phases["plain_ms"]:
            print(
                f"  {phase:14s} {phases['plain_ms'][phase]:8.1f} {phases['probed_ms'][phase]:8.1f} "
                f"{phases['extra_ms'][phase]:8.1f}"
            )
    if "profile" in figures:
        profile = figures["profile"]
        print(
            f"\nprofile (self CPU time, ms/step) of a {profile['cell']} step, probe route {profile['route']}:"
        )
        for name, row in profile["phases"].items():
            print(
                f"  {name}: plain {row['plain_ms']:.1f}, probed {row['probed_ms']:.1f}; largest differences:"
            )
            for op in row["top_extra_ops"]:
                if abs(op["extra_ms"]) >= 0.05:
                    print(
                        f"    {op['op'][:46]:46s} {op['plain_ms']:8.1f} -> {op['probed_ms']:8.1f} "
                        f"({op['extra_ms']:+7.1f}, {op['probed_calls']:g} calls)"
                    )
    if "instruments" in figures:
        row = figures["instruments"]
        print(
            f"\ninstruments on probe steps (Lightning run, LSTM, every {row['every_n_steps']} steps; "
            f"probe batch {row['probe_batch_ms']:.1f} ms, other batch {row['other_batch_ms']:.1f} ms):"
        )
        label = "gradient-flow probe (forward/backward)"
        print(f"  {label:40s} {row['probe_in_step_ms']:8.2f} ms per probe step")
        for name, costs in row["callbacks"].items():
            print(
                f"  {name + ' (hooks)':40s} {costs['probe_step_ms']:8.2f} ms per probe step, "
                f"{costs['other_step_ms']:.3f} ms per other step"
            )
    if "lightning" in figures:
        row = figures["lightning"]
        print(
            f"\nLightning fit {row['rnnflow_step_ms']:.1f} ms/batch vs raw loop "
            f"{row['raw_step_ms']:.1f} ms/batch ({row['samples_per_variant']} batches each)"
        )
    if "amortized" in figures:
        row = figures["amortized"]
        print(
            f"measured diagnostics overhead (window {row['window']}, probes at {row['probe_batches']}): "
            f"{100 * row['overhead']:.2f}% (raw window sums {100 * row['raw_window_overhead']:.2f}%); "
            f"per-batch callbacks {100 * row['per_step_overhead']:.2f}% "
            f"+ probes {100 * row['probe_overhead']:.2f}% = {100 * row['decomposed_overhead']:.2f}%; "
            f"probe batch {row['probe_batch_vs_plain_batch']:.2f}x a plain one; whole short run incl. set-up "
            f"and step-0/last figures {100 * row['whole_run_overhead']:.1f}%"
        )
    if "length_scaling" in figures:
        print("step by T, plain and probed (auto):")
        for cell, by_length in figures["length_scaling"].items():
            for length, row in by_length.items():
                print(
                    f"  {cell:4s} T={length:>5s}: {row['step_ms']:8.1f} -> {row['probe_step_ms']:8.1f} ms "
                    f"({row['probe_vs_plain']:.2f}x), peak {row['peak_mb']:7.1f} -> "
                    f"{row['probe_peak_mb']:7.1f} MB "
                    f"({row['probe_peak_vs_plain']:.2f}x), saved activations {row['saved_mb']:7.1f} MB"
                )
    if "denormal" in figures:
        print("denormals, vanishing (rho 0.5) vs healthy (rho 1), ms:")
        for cell, row in figures["denormal"].items():
            parts = []
            for suffix, label in (("", "flush-to-zero"), ("_without_flush", "without")):
                if f"healthy_ms{suffix}" not in row:
                    continue
                parts.append(
                    f"{label}: plain {row[f'vanishing_ms{suffix}']:.0f}/{row[f'healthy_ms{suffix}']:.0f} "
                    f"({row[f'slowdown{suffix}']:.3f}x), probed {row[f'probed_vanishing_ms{suffix}']:.0f}/"
                    f"{row[f'probed_healthy_ms{suffix}']:.0f} ({row[f'probed_slowdown{suffix}']:.3f}x)"
                )
            print(
                f"  {cell:4s} log10 ratio vanishing {row['vanishing_log10_ratio']} "
                f"({row['vanishing_zero_steps']} steps at 0), healthy {row['healthy_log10_ratio']} "
                f"({row['healthy_zero_steps']} at 0); " + "; ".join(parts)
            )
    if figures.get("host_memory"):
        row = figures["host_memory"]
        print(
            f"host memory, plain LSTM step: kept {row['kept_ms']:.0f} ms ({row['kept_faults_per_step']:.0f} "
            f"page faults), returned to the kernel {row['returned_ms']:.0f} ms "
            f"({row['returned_faults_per_step']:.0f} page faults): {row['speedup']:.2f}x"
        )


def finite(value: Any) -> Any:
    """JSON-safe: non-finite floats become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per comparison (medians)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--profile", action="store_true", help="torch.profiler of a probed step")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated sections to run ({', '.join(SECTIONS)})"
    )
    parser.add_argument(
        "--cells",
        default=",".join(CELLS),
        help=f"comma-separated cells of the probe section ({', '.join(CELLS)})",
    )
    args = parser.parse_args()
    sections = set(args.only.split(","))
    if unknown := sections - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}")
    if unknown := set(args.cells.split(",")) - set(CELLS):
        parser.error(f"unknown cells {sorted(unknown)}")
    cells = tuple(cell for cell in CELLS if cell in args.cells.split(","))
    length_cells = tuple(cell for cell in cells if cell != "rnn") or cells
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    device = torch.device(args.device)
    quiet_lightning()
    # rnnflow's CPU defaults (cpu_flush_denormal, cpu_keep_freed_memory), for every variant alike.
    apply_host_settings(flush_denormal=True, keep_freed_memory=True)
    every_n_steps = default_every_n_steps()
    sizes = BenchSizes.for_device(device, args.quick, every_n_steps)
    repeats = max(1, args.repeats)
    started, load_before = time.perf_counter(), load_average()
    print(
        f"rnnflow bench on {device}: sizes {sizes.as_dict()}, repeats {repeats}, load {load_before}",
        flush=True,
    )

    figures: dict[str, Any] = {}
    section_load: dict[str, Any] = {}

    def announce(section: str) -> None:
        """Print progress and note the load average as the section starts (a noise indicator)."""
        section_load[section] = load_average()
        print(f"{section} ... (load {section_load[section]})", flush=True)

    with tempfile.TemporaryDirectory(prefix="rnnflow-bench-") as workdir:
        if "probe" in sections:
            announce("probe vs plain")
            figures["probe"] = bench_probe(sizes, device, repeats, cells)
            if "lstm" in figures["probe"]:
                figures["probe_vs_plain"] = figures["probe"]["lstm"]["auto_vs_plain"]
                figures["amortized_overhead"] = (figures["probe_vs_plain"] - 1) / every_n_steps
        if "phases" in sections:
            announce("probe phases")
            figures["probe_phases"] = probe_phases(sizes, device, repeats)
        if args.profile:
            announce("profile")
            figures["profile"] = profile_probed_step(sizes, device)
        if "instruments" in sections:
            announce("instruments on probe steps")
            figures["instruments"] = bench_instruments(sizes, device, Path(workdir))
        if "lightning" in sections:
            announce("Lightning vs raw loop")
            figures["lightning"] = bench_lightning_vs_raw(sizes, device, repeats, Path(workdir))
            figures["lightning_vs_raw"] = figures["lightning"]["throughput_ratio"]
        if "amortized" in sections:
            announce("measured diagnostics overhead")
            runs = 1 if args.quick else max(2, math.ceil(repeats / 2))
            figures["amortized"] = bench_amortized_measured(sizes, device, runs, Path(workdir))
            figures["amortized_overhead_measured"] = figures["amortized"]["overhead"]
        if "lengths" in sections:
            announce("length scaling")
            figures["length_scaling"] = bench_lengths(sizes, device, repeats, length_cells)
        if "denormal" in sections:
            announce("denormals")
            figures["denormal"] = bench_denormal(sizes, device, repeats)
            figures["denormal_slowdown"] = max(row["slowdown"] for row in figures["denormal"].values())
            if device.type == "cpu":
                figures["denormal_slowdown_without_flush"] = max(
                    row["slowdown_without_flush"] for row in figures["denormal"].values()
                )
        if "explain" in sections:
            announce("explanatory instruments")
            figures["explain"] = bench_explain(sizes, device, repeats, cells)
            if "lstm" in figures["explain"]:
                figures["explain_overhead"] = figures["explain"]["lstm"]["all_in_step_vs_probe"] - 1
        if "host_memory" in sections and device.type == "cpu":
            announce("host memory")
            figures["host_memory"] = bench_host_memory(sizes, repeats)
            if figures["host_memory"]:
                figures["host_memory_speedup"] = figures["host_memory"]["speedup"]

    figures["every_n_steps"] = every_n_steps
    figures["sizes"] = sizes.as_dict()
    figures["repeats"] = repeats
    figures["quick"] = args.quick
    figures["environment"] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_before": load_before,
        "load_after": load_average(),
        "load_at_section_start": section_load,
        "elapsed_s": time.perf_counter() - started,
    }
    rows = table_rows(figures, device)
    figures["table"] = [{"figure": n, "value": v, "goal": g, "result": r} for n, v, g, r in rows]
    print_report(figures, rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(finite(figures), indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
