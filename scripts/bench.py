"""Benchmark: what rnnflow's training step and its probes cost, measured side by side.

    python scripts/bench.py [--device cpu|cuda] [--repeats 5] [--quick] [--json bench.json]

Every comparison runs its variants interleaved in one process (A, B, A, B, …) so that drift
and noise hit both, and reports medians. Figures (ratios; > 1 means slower unless stated):

* ``lightning_vs_raw``: throughput of an rnnflow training step through Lightning (the
  LightningModule, data module, clipping statistics and non-finite check; diagnostics off)
  divided by that of a hand-written PyTorch loop with the same model, optimizer and data
  (goal ≥ 0.97 on CPU, ≥ 1/1.1 on GPU).
* ``probe_vs_plain``: a probed training step (exact ∂L/∂h_t for every t) over a plain one,
  LSTM (goal ≤ 1.5 on CPU, ≤ 1.2 on GPU); per cell and route in ``probe``.
* ``amortized_overhead``: (probed − plain) / (every_n_steps · plain) at the default probe
  interval (goal ≤ 2%); ``amortized_overhead_measured``: a whole Lightning run with all
  diagnostics callbacks on over the same run with them off, minus 1.
* ``length_scaling``: plain step time and saved activation memory per step of T at T = 250,
  1000, 4000, normalised to T = 1000 (goal: within 10% of 1).
* ``denormal_slowdown``: a vanishing run (ρ = 0.5) over a healthy one (ρ = 1) with rnnflow's
  flush-to-zero (goal ≤ 1.1); ``denormal_slowdown_without_flush``: the same without it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from rnnflow.diagnostics.gradient_flow import GradientFlowProbe
from rnnflow.models import RecurrentNet
from rnnflow.tasks import AddingTask
from rnnflow.training.build import build_datamodule, build_module, build_task_from_config, build_trainer

ROOT = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(
    variants: dict[str, Callable[[], None]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Median wall time (s) of each variant, timed A, B, C, A, B, C, … after one warm-up each."""
    for run in variants.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            sync(device)
            start = time.perf_counter()
            run()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


class Sizes:
    def __init__(self, device: torch.device, quick: bool) -> None:
        gpu = device.type == "cuda"
        self.hidden = 32 if quick else (256 if gpu else 128)
        self.batch = 16 if quick else (128 if gpu else 64)
        self.steps = 100 if quick else 1000
        self.lengths = (50, 100, 200) if quick else (250, 1000, 4000)
        self.fit_steps = 3 if quick else 5
        self.small = (
            dict(hidden=16, steps=40, batch=16, run_steps=20)
            if quick
            else dict(hidden=64, steps=200, batch=64, run_steps=200)
        )


def adding_batch(steps: int, batch: int, device: torch.device, seed: int = 0):
    return AddingTask(steps).generate(batch, torch.Generator(device=device).manual_seed(seed), device)


def plain_and_probed_step(
    model: RecurrentNet, optimizer: torch.optim.Optimizer, inputs: torch.Tensor, targets: torch.Tensor
) -> tuple[Callable[[], None], Callable[[str], Callable[[], None]]]:
    def plain() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(inputs).squeeze(-1), targets).backward()
        optimizer.step()

    def probed(route: str) -> Callable[[], None]:
        def run() -> None:
            probe = GradientFlowProbe(route=route)
            optimizer.zero_grad(set_to_none=True)
            nn.functional.mse_loss(model(inputs, layer_call=probe.layer_call).squeeze(-1), targets).backward()
            probe.gradient_flow()
            optimizer.step()

        return run

    return plain, probed


def bench_probe(sizes: Sizes, device: torch.device, repeats: int) -> dict[str, dict[str, float]]:
    batch = adding_batch(sizes.steps, sizes.batch, device)
    results = {}
    for cell in ("rnn", "lstm", "gru"):
        torch.manual_seed(0)
        model = RecurrentNet(cell, 2, sizes.hidden, 1, 1, readout="last").to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        plain, probed = plain_and_probed_step(model, optimizer, batch.inputs, batch.targets)
        variants = {"plain": plain, "auto": probed("auto"), "extra_input": probed("extra_input")}
        if cell != "gru":
            variants["adjoint"] = probed("adjoint")
        medians = interleaved_medians(variants, repeats, device)
        results[cell] = {
            "plain_ms": 1e3 * medians["plain"],
            **{f"{name}_vs_plain": medians[name] / medians["plain"] for name in variants if name != "plain"},
        }
    return results


class StepTimer(L.Callback):
    """Wall time of every training batch (hook to hook, optimizer step included)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times = device, []

    def on_train_batch_start(self, *args) -> None:
        sync(self.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        sync(self.device)
        self.times.append(time.perf_counter() - self._start)


def compose_run(overrides: list[str], out: Path):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={out}", *overrides])


def lightning_fit(cfg, extra: list[L.Callback], logger: bool, callbacks: bool):
    L.seed_everything(cfg.seed, verbose=False)
    task = build_task_from_config(cfg)
    module = build_module(cfg, task)
    data = build_datamodule(cfg, task)
    if not callbacks:
        cfg.callbacks = {}
    if not logger:
        cfg.logger = {}
    trainer = build_trainer(cfg, extra_callbacks=extra)
    trainer.fit(module, datamodule=data)


def bench_lightning_vs_raw(sizes: Sizes, device: torch.device, repeats: int, tmp: Path) -> dict[str, float]:
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    overrides = [
        f"model.hidden_size={sizes.hidden}",
        f"task.seq_len={sizes.steps}",
        f"task.batch_size={sizes.batch}",
        f"trainer.max_steps={sizes.fit_steps + 1}",
        "trainer.val_check_interval=100000",
        "trainer.enable_progress_bar=false",
        "task.val_batches=1",
        f"trainer.accelerator={accelerator}",
        "diagnostics.every_n_steps=null",
        "diagnostics.spectral_every_n_steps=null",
    ]
    cfg = compose_run(overrides, tmp / "lightning")

    def rnnflow_run() -> list[float]:
        timer = StepTimer(device)
        lightning_fit(compose_run(overrides, tmp / "lightning"), [timer], logger=False, callbacks=False)
        return timer.times[1:]  # the first batch pays for set-up

    torch.manual_seed(0)
    model = nn.ModuleDict(
        {"lstm": nn.LSTM(2, sizes.hidden, batch_first=True), "head": nn.Linear(sizes.hidden, 1)}
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    task = AddingTask(sizes.steps)

    def raw_run() -> list[float]:
        times = []
        for index in range(sizes.fit_steps + 1):
            sync(device)
            start = time.perf_counter()
            batch = task.generate(sizes.batch, torch.Generator(device=device).manual_seed(index), device)
            optimizer.zero_grad(set_to_none=True)
            output = model["head"](model["lstm"](batch.inputs)[0][:, -1]).squeeze(-1)
            nn.functional.mse_loss(output, batch.targets).backward()
            optimizer.step()
            sync(device)
            times.append(time.perf_counter() - start)
        return times[1:]

    rnnflow_times, raw_times = [], []
    for _ in range(repeats):
        rnnflow_times += rnnflow_run()
        raw_times += raw_run()
    rnnflow_step, raw_step = statistics.median(rnnflow_times), statistics.median(raw_times)
    return {
        "rnnflow_step_ms": 1e3 * rnnflow_step,
        "raw_step_ms": 1e3 * raw_step,
        "ratio": raw_step / rnnflow_step,
    }


def bench_amortized_measured(sizes: Sizes, device: torch.device, repeats: int, tmp: Path) -> dict[str, float]:
    """A whole default-diagnostics Lightning run against the same run without diagnostics."""
    small = sizes.small
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    base = [
        f"model.hidden_size={small['hidden']}",
        f"task.seq_len={small['steps']}",
        f"task.batch_size={small['batch']}",
        f"trainer.max_steps={small['run_steps']}",
        "trainer.val_check_interval=100000",
        "trainer.enable_progress_bar=false",
        "task.val_batches=1",
        f"trainer.accelerator={accelerator}",
    ]
    off = [*base, "diagnostics.every_n_steps=null", "diagnostics.spectral_every_n_steps=null"]

    def run(overrides: list[str], name: str) -> Callable[[], None]:
        return lambda: lightning_fit(compose_run(overrides, tmp / name), [], logger=True, callbacks=True)

    medians = interleaved_medians(
        {"on": run(base, "on"), "off": run(off, "off")}, max(1, repeats // 2), device
    )
    return {"on_s": medians["on"], "off_s": medians["off"], "overhead": medians["on"] / medians["off"] - 1}


def saved_activation_bytes(run: Callable[[], None]) -> int:
    """Bytes of the tensors autograd saves for backward during ``run`` (activation memory)."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return total


def bench_lengths(sizes: Sizes, device: torch.device, repeats: int) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    model = RecurrentNet("lstm", 2, sizes.hidden, 1, 1, readout="last").to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    steps = {}
    for length in sizes.lengths:
        batch = adding_batch(length, sizes.batch, device)
        steps[length], _ = plain_and_probed_step(model, optimizer, batch.inputs, batch.targets)
    medians = interleaved_medians({str(k): v for k, v in steps.items()}, repeats, device)
    memory = {length: saved_activation_bytes(run) for length, run in steps.items()}
    reference = sizes.lengths[1]
    return {
        str(length): {
            "step_ms": 1e3 * medians[str(length)],
            "time_per_step_vs_reference": (medians[str(length)] / length)
            / (medians[str(reference)] / reference),
            "saved_mb": memory[length] / 2**20,
            "memory_per_step_vs_reference": (memory[length] / length) / (memory[reference] / reference),
        }
        for length in sizes.lengths
    }


def bench_denormal(sizes: Sizes, device: torch.device, repeats: int) -> dict[str, float]:
    batch = adding_batch(sizes.steps, sizes.batch, device)
    steps = {}
    for radius in (0.5, 1.0):
        torch.manual_seed(0)
        init = {"recurrent": "orthogonal", "spectral_radius": radius}
        model = RecurrentNet("lstm", 2, sizes.hidden, 1, 1, readout="last", init=init).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # keep ρ fixed across repeats
        steps[radius], _ = plain_and_probed_step(model, optimizer, batch.inputs, batch.targets)
    result = {}
    for flush in (True, False):
        torch.set_flush_denormal(flush)
        medians = interleaved_medians({"vanishing": steps[0.5], "healthy": steps[1.0]}, repeats, device)
        key = "slowdown" if flush else "slowdown_without_flush"
        result[key] = medians["vanishing"] / medians["healthy"]
        result[f"healthy_ms{'' if flush else '_without_flush'}"] = 1e3 * medians["healthy"]
    torch.set_flush_denormal(True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test, not a measurement)")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_flush_denormal(True)  # rnnflow's default on the CPU (cpu_flush_denormal)
    sizes = Sizes(device, args.quick)
    every_n_steps = int(compose_run([], Path("unused")).diagnostics.every_n_steps)
    tmp = Path(ROOT / "logs" / "bench")

    probe = bench_probe(sizes, device, args.repeats)
    lightning = bench_lightning_vs_raw(sizes, device, args.repeats, tmp)
    lengths = bench_lengths(sizes, device, args.repeats)
    denormal = bench_denormal(sizes, device, args.repeats)
    measured = bench_amortized_measured(sizes, device, args.repeats, tmp)
    lstm = probe["lstm"]
    gpu = device.type == "cuda"
    figures = {
        "device": torch.cuda.get_device_name(device) if gpu else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "sizes": {
            "hidden": sizes.hidden,
            "batch": sizes.batch,
            "steps": sizes.steps,
            "repeats": args.repeats,
        },
        "lightning_vs_raw": lightning["ratio"],
        "probe_vs_plain": lstm["auto_vs_plain"],
        "amortized_overhead": (lstm["auto_vs_plain"] - 1) / every_n_steps,
        "amortized_overhead_measured": measured["overhead"],
        "denormal_slowdown": denormal["slowdown"],
        "denormal_slowdown_without_flush": denormal["slowdown_without_flush"],
        "every_n_steps": every_n_steps,
        "probe": probe,
        "lightning": lightning,
        "length_scaling": lengths,
        "denormal": denormal,
        "amortized_measured": measured,
    }
    goals = {
        "lightning_vs_raw": (">=", 1 / 1.1 if gpu else 0.97),
        "probe_vs_plain": ("<=", 1.2 if gpu else 1.5),
        "amortized_overhead": ("<=", 0.02),
        "amortized_overhead_measured": ("<=", 0.02),
        "denormal_slowdown": ("<=", 1.1),
    }
    print(f"rnnflow bench on {figures['device']}, torch {torch.__version__}, sizes {figures['sizes']}")
    print(f"{'figure':36s} {'value':>9s}  {'goal':>8s}  ok")
    for name, (sense, goal) in goals.items():
        value = figures[name]
        ok = value >= goal if sense == ">=" else value <= goal
        print(f"{name:36s} {value:9.3f}  {sense}{goal:7.3f}  {'yes' if ok else 'NO'}")
    for cell, row in probe.items():
        ratios = ", ".join(
            f"{k.removesuffix('_vs_plain')} {v:.2f}x" for k, v in row.items() if k.endswith("plain")
        )
        print(f"  probe {cell:4s}: plain {row['plain_ms']:.0f} ms; probed: {ratios}")
    print(
        f"  lightning step {lightning['rnnflow_step_ms']:.0f} ms, raw loop {lightning['raw_step_ms']:.0f} ms"
    )
    for length, row in lengths.items():
        print(
            f"  T={length:>5s}: {row['step_ms']:.0f} ms, time/T vs ref "
            f"{row['time_per_step_vs_reference']:.3f}, saved {row['saved_mb']:.1f} MB, "
            f"memory/T vs ref {row['memory_per_step_vs_reference']:.3f}"
        )
    print(
        f"  denormal: vanishing/healthy {denormal['slowdown']:.2f}x with flush-to-zero, "
        f"{denormal['slowdown_without_flush']:.2f}x without"
    )
    print(f"  whole run with diagnostics: {measured['on_s']:.1f} s vs {measured['off_s']:.1f} s without")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
