"""The measurements behind ``scripts/bench.py``: what a training step and its probes cost.

Each function runs one comparison, interleaving its variants in this process
(:func:`benchmarks.timing.interleaved_timings`), and returns plain numbers (ms, ratios)
ready for JSON. Ratios are ``variant time / reference time`` (> 1 means slower) unless
their name says otherwise. The task is always the adding problem (inputs ``(B, T, 2)``,
target ``(B,)``, MSE), the model a one-layer :class:`rnnflow.models.RecurrentNet`.

* :func:`bench_probe`: a probed training step (forward through
  :class:`rnnflow.probes.gradient_flow.GradientFlowProbe`, backward,
  ``probe.gradient_flow()``, optimizer step) over a plain one, per cell and probe route.
* :func:`probe_phases` / :func:`profile_probed_step`: where a probed step spends its time.
* :func:`bench_lightning_vs_raw`: iterations per second of a real ``Trainer.fit`` of
  :class:`rnnflow.lit.module.RecurrentTaskModule` over those of a hand-written loop
  (same fused module, Adam, the same batches from the same generator).
* :func:`bench_amortized_measured`: Lightning runs with every diagnostics callback on
  (default config) against the same runs with them off.
* :func:`bench_lengths`: plain and probed step time and memory at several T.
* :func:`bench_denormal`: a vanishing model (ρ = 0.5) against a healthy one (ρ = 1), with
  and without flush-to-zero.
* :func:`bench_explain`: each explanatory instrument's own time on a probe step (activations,
  gates, Lyapunov, credit, parameter gradients, verdict, picture, and the shared gate recomputation)
  over the probed step, and the probed step with all of them over the plain probed step.
* :func:`bench_host_memory`: a plain step with freed host memory kept in the process
  (rnnflow's default on the CPU) against glibc's default of returning it to the kernel.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import subprocess
import sys
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from torch import nn

from benchmarks.timing import (
    HookClock,
    IterationClock,
    clock,
    interleaved_timings,
    peak_memory_bytes,
    saved_activation_bytes,
)
from rnnflow.lit.data import TRAIN_STREAM, batch_seed
from rnnflow.models import RecurrentNet
from rnnflow.models.fused import fused_spec
from rnnflow.probes.gradient_flow import GradientFlowProbe, choose_route
from rnnflow.runtime.build import build_datamodule, build_module, build_task_from_config, build_trainer
from rnnflow.tasks import AddingTask

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
CELLS = ("rnn", "lstm", "gru")


@dataclass
class BenchSizes:
    """Sizes of every comparison (written to the JSON next to the figures)."""

    device: str
    hidden: int  # probe, Lightning-vs-raw, lengths and denormal comparisons
    batch: int
    steps: int  # T
    lengths: tuple[int, ...]  # T values of the length scaling; the middle one is the reference
    fit_steps: int  # timed batches per Lightning fit / raw-loop run
    fit_warmup: int  # batches dropped at the start of each fit / run
    small_hidden: int  # the measured amortized-overhead runs
    small_steps: int
    small_batch: int
    every_n_steps: int  # probe interval of the measured runs (the default config's, unless quick)
    probe_windows: int  # probe intervals in the timed window of a measured run

    @classmethod
    def for_device(cls, device: torch.device, quick: bool, every_n_steps: int) -> BenchSizes:
        gpu = device.type == "cuda"
        if quick:
            return cls(str(device), 32, 16, 100, (50, 100, 200), 4, 2, 16, 40, 16, 10, 3)
        if gpu:
            return cls(str(device), 256, 128, 1000, (250, 1000, 4000), 20, 5, 128, 200, 128, every_n_steps, 3)
        return cls(str(device), 128, 64, 1000, (250, 1000, 4000), 8, 2, 64, 200, 64, every_n_steps, 3)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def quiet_lightning() -> None:
    """Silence Lightning's per-fit banners and known harmless warnings (the bench runs many fits)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")


def adding_batch(
    steps: int, batch: int, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator(device=device).manual_seed(seed)
    drawn = AddingTask(steps).generate(batch, generator, device)
    return drawn.inputs, drawn.targets


def make_model(cell: str, hidden: int, device: torch.device, init: dict | None = None) -> RecurrentNet:
    torch.manual_seed(0)
    return RecurrentNet(cell, 2, hidden, 1, 1, readout="last", init=init).to(device)


def step_functions(
    model: RecurrentNet, optimizer: torch.optim.Optimizer, inputs: torch.Tensor, targets: torch.Tensor
) -> tuple[Callable[[], None], Callable[[str], Callable[[], None]]]:
    """``(plain, probed)``: a plain training step, and ``probed(route)`` the same step probed."""

    def plain() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(inputs).squeeze(-1), targets).backward()
        optimizer.step()

    def probed(route: str) -> Callable[[], None]:
        return probed_step(model, optimizer, inputs, targets, route)

    return plain, probed


def probed_step(
    model: RecurrentNet,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    route: str = "auto",
    consumer: Callable[[Any], None] | None = None,
) -> Callable[[], None]:
    """A training step probed with ``route`` (``consumer`` gets every probed layer's record)."""

    def run() -> None:
        probe = GradientFlowProbe(route=route)
        if consumer is not None:
            probe.add_consumer(consumer)
        optimizer.zero_grad(set_to_none=True)
        with probe.attach(model):
            outputs = model(inputs)
        nn.functional.mse_loss(outputs.squeeze(-1), targets).backward()
        probe.gradient_flow()
        optimizer.step()

    return run


def routes_for(cell: str) -> tuple[str, ...]:
    return ("extra_input", "adjoint")


def bench_probe(
    sizes: BenchSizes, device: torch.device, repeats: int, cells: tuple[str, ...] = CELLS
) -> dict[str, dict[str, Any]]:
    """Probed step over plain step, per cell (of ``cells``), for ``auto`` and every explicit route.

    Time: interleaved medians. Memory: the peak allocated during one step above what was
    allocated before it (:func:`benchmarks.timing.peak_memory_bytes`), plain and probed.
    """
    inputs, targets = adding_batch(sizes.steps, sizes.batch, device)
    results: dict[str, dict[str, Any]] = {}
    for cell in cells:
        model = make_model(cell, sizes.hidden, device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        plain, probed = step_functions(model, optimizer, inputs, targets)
        variants = {"plain": plain, "auto": probed("auto")}
        variants.update({route: probed(route) for route in routes_for(cell)})
        timings = interleaved_timings(variants, repeats, device)
        medians = timings.medians
        peaks = {name: peak_memory_bytes(run, device) for name, run in variants.items()}
        results[cell] = {
            "plain_ms": 1e3 * medians["plain"],
            "auto_route": choose_route(fused_spec(model.layers[0]), device, "auto"),
            **{f"{name}_ms": 1e3 * medians[name] for name in variants if name != "plain"},
            **{f"{name}_vs_plain": medians[name] / medians["plain"] for name in variants if name != "plain"},
            "plain_spread": timings.spread("plain"),
            "plain_peak_bytes": peaks["plain"],
            **{f"{name}_peak_bytes": peaks[name] for name in variants if name != "plain"},
            **{f"{name}_peak_vs_plain": peaks[name] / peaks["plain"] for name in variants if name != "plain"},
        }
    return results


PHASES = ("forward", "backward", "gradient_flow", "optimizer")


def phased_step(
    model: RecurrentNet,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    device: torch.device,
    route: str | None,
) -> dict[str, float]:
    """One training step (probed with ``route``, plain if None), seconds per phase."""
    probe = GradientFlowProbe(route=route) if route is not None else None
    start = clock(device)
    optimizer.zero_grad(set_to_none=True)
    with probe.attach(model) if probe is not None else nullcontext():
        outputs = model(inputs)
    loss = nn.functional.mse_loss(outputs.squeeze(-1), targets)
    forward = clock(device)
    loss.backward()
    backward = clock(device)
    if probe is not None:
        probe.gradient_flow()
    flow = clock(device)
    optimizer.step()
    end = clock(device)
    return {
        "forward": forward - start,
        "backward": backward - forward,
        "gradient_flow": flow - backward,
        "optimizer": end - flow,
        "total": end - start,
    }


def probe_phases(
    sizes: BenchSizes, device: torch.device, repeats: int, cell: str = "lstm", route: str = "auto"
) -> dict[str, Any]:
    """Median ms per phase of a plain and a probed step (interleaved), and the probe's extra per phase."""
    inputs, targets = adding_batch(sizes.steps, sizes.batch, device)
    model = make_model(cell, sizes.hidden, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    samples: dict[str, list[dict[str, float]]] = {"plain": [], "probed": []}
    variants = {"plain": None, "probed": route}
    for variant_route in variants.values():  # warm-up
        phased_step(model, optimizer, inputs, targets, device, variant_route)
    for round_index in range(repeats):
        order = list(variants) if round_index % 2 == 0 else list(variants)[::-1]
        for name in order:
            samples[name].append(phased_step(model, optimizer, inputs, targets, device, variants[name]))
    result: dict[str, Any] = {"cell": cell, "route": choose_route(fused_spec(model.layers[0]), device, route)}
    for name, rows in samples.items():
        result[f"{name}_ms"] = {
            phase: 1e3 * statistics.median(row[phase] for row in rows) for phase in (*PHASES, "total")
        }
    result["extra_ms"] = {
        phase: result["probed_ms"][phase] - result["plain_ms"][phase] for phase in (*PHASES, "total")
    }
    return result


def profile_probed_step(
    sizes: BenchSizes,
    device: torch.device,
    cell: str = "lstm",
    route: str = "auto",
    top: int = 8,
    steps: int = 3,
) -> dict[str, Any]:
    """torch.profiler, phase by phase, of a plain and a probed step: where the probe's extra time goes.

    Each phase (forward, backward, gradient_flow, optimizer) of ``steps`` plain and ``steps``
    probed steps runs under its own profiler. Per phase: the summed self time of its operators
    (ms per step, plain and probed) and the ``top`` operators by extra self time (probed −
    plain). Self time is CPU time; on a GPU also the device's self time.
    """
    from torch.profiler import ProfilerActivity, profile

    inputs, targets = adding_batch(sizes.steps, sizes.batch, device)
    model = make_model(cell, sizes.hidden, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    gpu = device.type == "cuda"
    # totals[variant][phase][op] = [self cpu us, self device us, calls]
    totals: dict[str, dict[str, dict[str, list[float]]]] = {"plain": {}, "probed": {}}

    def phase(variant: str, name: str, work: Callable[[], Any]) -> Any:
        with profile(activities=activities) as prof:
            result = work()
            clock(device)
        table = totals[variant].setdefault(name, {})
        for event in prof.key_averages():
            row = table.setdefault(event.key, [0.0, 0.0, 0.0])
            row[0] += event.self_cpu_time_total
            row[1] += getattr(event, "self_device_time_total", 0.0) if gpu else 0.0
            row[2] += event.count
        return result

    def step(variant: str, profiled: bool) -> None:
        probe = GradientFlowProbe(route=route) if variant == "probed" else None

        def forward() -> torch.Tensor:
            with probe.attach(model) if probe is not None else nullcontext():
                return nn.functional.mse_loss(model(inputs).squeeze(-1), targets)

        def run(name: str, work: Callable[[], Any]) -> Any:
            return phase(variant, name, work) if profiled else work()

        optimizer.zero_grad(set_to_none=True)
        loss = run("forward", forward)
        run("backward", loss.backward)
        run("gradient_flow", probe.gradient_flow if probe is not None else (lambda: None))
        run("optimizer", optimizer.step)

    step("plain", False), step("probed", False)  # warm-up
    for _ in range(steps):
        step("plain", True), step("probed", True)
    phases: dict[str, Any] = {}
    for name in PHASES:
        plain, probed = totals["plain"].get(name, {}), totals["probed"].get(name, {})
        ops = []
        for op in set(plain) | set(probed):
            a, b = plain.get(op, [0.0, 0.0, 0.0]), probed.get(op, [0.0, 0.0, 0.0])
            row = {
                "op": op,
                "plain_ms": a[0] / 1e3 / steps,
                "probed_ms": b[0] / 1e3 / steps,
                "extra_ms": (b[0] - a[0]) / 1e3 / steps,
                "probed_calls": b[2] / steps,
            }
            if gpu:
                row["extra_device_ms"] = (b[1] - a[1]) / 1e3 / steps
            ops.append(row)
        ops.sort(key=lambda row: abs(row["extra_ms"]), reverse=True)
        phases[name] = {
            "plain_ms": sum(v[0] for v in plain.values()) / 1e3 / steps,
            "probed_ms": sum(v[0] for v in probed.values()) / 1e3 / steps,
            "top_extra_ops": ops[:top],
        }
    return {"cell": cell, "route": choose_route(fused_spec(model.layers[0]), device, route), "phases": phases}


# --- Lightning runs ---------------------------------------------------------------------------------


def compose_run(overrides: list[str], output_dir: Path) -> DictConfig:
    """The ``train`` config with ``overrides``, writing under ``output_dir``."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={output_dir}", *overrides])


def default_every_n_steps() -> int:
    """``diagnostics.every_n_steps`` of the default config (conf/train.yaml)."""
    return int(compose_run([], Path("unused")).diagnostics.every_n_steps)


def run_overrides(device: torch.device, cell: str, hidden: int, steps: int, batch: int, max_steps: int):
    return [
        f"trainer={'gpu' if device.type == 'cuda' else 'cpu'}",
        f"model={cell}",
        f"model.hidden_size={hidden}",
        "model.num_layers=1",
        "task=adding",
        f"task.seq_len={steps}",
        f"task.batch_size={batch}",
        f"trainer.max_steps={max_steps}",
        "+trainer.limit_val_batches=0",  # no validation: only training batches are timed
        "trainer.enable_progress_bar=false",
    ]


def lightning_fit(
    cfg: DictConfig,
    device: torch.device,
    callbacks: tuple[str, ...] | None,
    logger: bool,
    extra: list[L.Callback] | None = None,
):
    """``Trainer.fit`` of the config's run with only the named callbacks (None: all); its clock.

    ``extra`` callbacks run first, after the clock."""
    with open_dict(cfg):
        if callbacks is not None:
            cfg.callbacks = {name: cfg.callbacks[name] for name in callbacks if name in cfg.callbacks}
        if not logger:
            cfg.logger = {}
    L.seed_everything(cfg.seed, verbose=False)
    task = build_task_from_config(cfg)
    module = build_module(cfg, task)
    data = build_datamodule(cfg, task)
    iteration_clock = IterationClock(device)
    trainer = build_trainer(cfg, extra_callbacks=[iteration_clock, *(extra or [])])
    trainer.fit(module, datamodule=data)
    return iteration_clock


class RawNet(nn.Module):
    """The hand-written model: torch's fused module (cuDNN on a GPU) and a linear head on the last step."""

    def __init__(self, cell: str, input_size: int, hidden: int, output_size: int) -> None:
        super().__init__()
        self.rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](input_size, hidden, batch_first=True)
        self.head = nn.Linear(hidden, output_size)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(inputs)[0][:, -1])


def raw_loop(cfg: DictConfig, device: torch.device, steps: int) -> list[float]:
    """A hand-written training loop over the same batches as the run of ``cfg``: seconds per batch."""
    task = build_task_from_config(cfg)
    torch.manual_seed(cfg.seed)
    model = RawNet(cfg.model.cell, task.input_size, cfg.model.hidden_size, task.output_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
    stamps = []
    for index in range(steps):
        stamps.append(clock(device))
        generator = torch.Generator(device=device)
        generator.manual_seed(batch_seed(cfg.seed, TRAIN_STREAM, 0, index))
        batch = task.generate(cfg.task.batch_size, generator, device)
        optimizer.zero_grad(set_to_none=True)
        task.loss(model(batch.inputs), batch.targets).backward()
        optimizer.step()
    stamps.append(clock(device))
    return [b - a for a, b in pairwise(stamps)]


def bench_lightning_vs_raw(sizes: BenchSizes, device: torch.device, repeats: int, workdir: Path) -> dict:
    """Iteration time of ``Trainer.fit`` (no diagnostics, no logger, no checkpoints) vs a raw loop.

    Lightning keeps the one callback every run has besides diagnostics (``clip``: the clip
    statistics the module records each step, drained to the logger, here to nothing). Each
    round runs one fit and one raw loop of ``fit_warmup + fit_steps`` batches (order
    alternating); the first ``fit_warmup`` batches of each are dropped; medians over all rounds.
    """
    total = sizes.fit_warmup + sizes.fit_steps
    overrides = [
        *run_overrides(device, "lstm", sizes.hidden, sizes.steps, sizes.batch, total),
        "diagnostics.every_n_steps=null",
        "diagnostics.spectral_every_n_steps=null",
        "diagnostics.figure_every_n_steps=null",
    ]

    def rnnflow_run() -> list[float]:
        cfg = compose_run(overrides, workdir / "lightning_vs_raw")
        return lightning_fit(cfg, device, callbacks=("clip",), logger=False).intervals[sizes.fit_warmup :]

    def raw_run() -> list[float]:
        cfg = compose_run(overrides, workdir / "lightning_vs_raw")
        return raw_loop(cfg, device, total)[sizes.fit_warmup :]

    rnnflow_run(), raw_run()  # warm-up: first fit pays for imports and allocator growth
    samples: dict[str, list[float]] = {"rnnflow": [], "raw": []}
    for round_index in range(repeats):
        order = ("rnnflow", "raw") if round_index % 2 == 0 else ("raw", "rnnflow")
        for name in order:
            samples[name] += rnnflow_run() if name == "rnnflow" else raw_run()
    rnnflow_step, raw_step = statistics.median(samples["rnnflow"]), statistics.median(samples["raw"])
    return {
        "rnnflow_step_ms": 1e3 * rnnflow_step,
        "raw_step_ms": 1e3 * raw_step,
        "rnnflow_steps_per_s": 1 / rnnflow_step,
        "raw_steps_per_s": 1 / raw_step,
        "throughput_ratio": raw_step / rnnflow_step,
        "samples_per_variant": len(samples["raw"]),
    }


def bench_amortized_measured(sizes: BenchSizes, device: torch.device, repeats: int, workdir: Path) -> dict:
    """Lightning runs with every diagnostics callback on (the default config) against them off.

    Both keep the TensorBoard logger, the clip monitor and checkpointing; ``on`` adds the
    gradient-flow probe, spectra and figures at probe interval ``n``. Timed window: batches
    ``[n/2, n/2 + k·n)`` (``k = probe_windows``), which holds exactly k probe (and spectral)
    batches and neither the step-0 nor the last-step probe, whose figures a long run amortises
    over thousands of batches. ``repeats`` runs per variant, alternating. Reported:

    * ``overhead``: Σ_k median over runs of batch k's time, on over off, − 1 (the per-batch
      median over runs drops a transient hiccup of one run, e.g. another process);
    * ``per_step_overhead``: median non-probe batch on / median batch off − 1 (callbacks that
      run every batch); ``probe_overhead``: the probe batches' time above a non-probe batch,
      per window batch, over the median batch off; ``decomposed_overhead`` their sum;
    * ``raw_window_overhead``: plain sums of the window, median over runs;
    * ``whole_run_overhead``: whole ``fit`` wall time on / off − 1 (set-up, the step-0 and
      last probes with their figures included: a short run pays them over few batches).
    """
    n = sizes.every_n_steps
    low, high = n // 2, n // 2 + sizes.probe_windows * n
    max_steps = high + max(2, n // 10)
    base = [
        *run_overrides(device, "lstm", sizes.small_hidden, sizes.small_steps, sizes.small_batch, max_steps),
        f"diagnostics.every_n_steps={n}",
        f"diagnostics.spectral_every_n_steps={n}",
    ]
    off = [
        *base,
        "diagnostics.every_n_steps=null",
        "diagnostics.spectral_every_n_steps=null",
        "diagnostics.figure_every_n_steps=null",
    ]
    probe_batches = [k for k in range(low, high) if k % n == 0]
    windows: dict[str, list[list[float]]] = {"on": [], "off": []}
    fits: dict[str, list[float]] = {"on": [], "off": []}
    for round_index in range(repeats):
        for name in ("on", "off") if round_index % 2 == 0 else ("off", "on"):
            cfg = compose_run(base if name == "on" else off, workdir / f"amortized_{name}_{round_index}")
            iteration_clock = lightning_fit(cfg, device, callbacks=None, logger=True)
            windows[name].append(iteration_clock.intervals[low:high])
            fits[name].append(iteration_clock.fit_end - iteration_clock.fit_start)

    # Per-batch medians over runs, (high - low) values per variant.
    batch = {
        name: [statistics.median(ts) for ts in zip(*runs, strict=True)] for name, runs in windows.items()
    }
    is_probe = [k in probe_batches for k in range(low, high)]
    ordinary_on = statistics.median(t for t, p in zip(batch["on"], is_probe, strict=True) if not p)
    ordinary_off = statistics.median(batch["off"])
    probe_times = [t for t, p in zip(batch["on"], is_probe, strict=True) if p]
    per_step = ordinary_on / ordinary_off - 1
    probe_extra = sum(t - ordinary_on for t in probe_times) / ((high - low) * ordinary_off)
    raw = {name: statistics.median(sum(run) for run in runs) for name, runs in windows.items()}
    return {
        "overhead": sum(batch["on"]) / sum(batch["off"]) - 1,
        "per_step_overhead": per_step,
        "probe_overhead": probe_extra,
        "decomposed_overhead": per_step + probe_extra,
        "raw_window_overhead": raw["on"] / raw["off"] - 1,
        "whole_run_overhead": statistics.median(fits["on"]) / statistics.median(fits["off"]) - 1,
        "probe_batch_vs_plain_batch": statistics.median(probe_times) / ordinary_off,
        "plain_batch_ms": 1e3 * ordinary_off,
        "probe_batch_ms": 1e3 * statistics.median(probe_times),
        "window": [low, high],
        "probe_batches": probe_batches,
        "max_steps": max_steps,
        "runs_per_variant": repeats,
        "fit_on_s": statistics.median(fits["on"]),
        "fit_off_s": statistics.median(fits["off"]),
    }


def bench_instruments(sizes: BenchSizes, device: torch.device, workdir: Path) -> dict[str, Any]:
    """What every instrument costs on probe steps, by name: one Lightning run of the default config.

    Every diagnostics callback of the default config is on, at probe interval ``n``
    (``every_n_steps``); :class:`benchmarks.timing.HookClock` times each callback's per-batch
    hooks. Per callback: the median over probe batches (batches ``k·n``, the last excluded: it
    draws the end-of-run figures) and over the other batches of its hooks' time per batch.
    ``probe_in_step_ms``: the gradient-flow probe's own cost inside the training step (its
    forward and backward), the median probe batch minus the median other batch minus every
    callback's extra time on probe batches.
    """
    n = sizes.every_n_steps
    max_steps = 3 * n + 2
    small = (sizes.small_hidden, sizes.small_steps, sizes.small_batch)
    cfg = compose_run(
        [
            *run_overrides(device, "lstm", *small, max_steps),
            f"diagnostics.every_n_steps={n}",
            f"diagnostics.spectral_every_n_steps={n}",
        ],
        workdir / "instruments",
    )
    hooks = HookClock(device)
    intervals = lightning_fit(cfg, device, callbacks=None, logger=True, extra=[hooks]).intervals
    probe = [k for k in range(1, max_steps - 1) if k % n == 0]
    other = [k for k in range(1, max_steps - 1) if k % n != 0]
    callbacks: dict[str, dict[str, float]] = {}
    for name, per_batch in hooks.seconds.items():
        on_probe = statistics.median(per_batch.get(k, 0.0) for k in probe)
        on_other = statistics.median(per_batch.get(k, 0.0) for k in other)
        callbacks[name] = {"probe_step_ms": 1e3 * on_probe, "other_step_ms": 1e3 * on_other}
    probe_batch = statistics.median(intervals[k] for k in probe)
    other_batch = statistics.median(intervals[k] for k in other)
    hook_extra = sum(row["probe_step_ms"] - row["other_step_ms"] for row in callbacks.values()) / 1e3
    return {
        "every_n_steps": n,
        "probe_batches": probe,
        "probe_batch_ms": 1e3 * probe_batch,
        "other_batch_ms": 1e3 * other_batch,
        "probe_in_step_ms": 1e3 * (probe_batch - other_batch - hook_extra),
        "callbacks": callbacks,
    }


# --- length scaling and denormals --------------------------------------------------------------------


def bench_lengths(
    sizes: BenchSizes, device: torch.device, repeats: int, cells: tuple[str, ...] = ("lstm", "gru")
) -> dict[str, dict[str, dict[str, float]]]:
    """Per cell and T: plain and probed (``auto``) step time, peak memory, and saved activations.

    Linear in T means a constant cost per step of T: ``*_per_step_vs_reference`` divides each
    figure by T and by the same at the middle T. ``probe_vs_plain`` and ``probe_peak_vs_plain``
    compare the probed step with the plain one at the same T.
    """
    reference = str(sizes.lengths[len(sizes.lengths) // 2])
    results: dict[str, dict[str, dict[str, float]]] = {}
    for cell in cells:
        model = make_model(cell, sizes.hidden, device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        variants: dict[str, Callable[[], None]] = {}
        for length in sizes.lengths:
            plain, probed = step_functions(model, optimizer, *adding_batch(length, sizes.batch, device))
            variants[f"plain_{length}"], variants[f"probe_{length}"] = plain, probed("auto")
        medians = interleaved_timings(variants, repeats, device).medians
        peaks = {name: peak_memory_bytes(run, device) for name, run in variants.items()}
        saved = {length: saved_activation_bytes(variants[f"plain_{length}"]) for length in sizes.lengths}
        rows = {}
        for length in sizes.lengths:
            scale = int(reference) / length
            plain_ms, probe_ms = medians[f"plain_{length}"], medians[f"probe_{length}"]
            plain_peak, probe_peak = peaks[f"plain_{length}"], peaks[f"probe_{length}"]
            rows[str(length)] = {
                "step_ms": 1e3 * plain_ms,
                "probe_step_ms": 1e3 * probe_ms,
                "probe_vs_plain": probe_ms / plain_ms,
                "time_per_step_vs_reference": plain_ms / medians[f"plain_{reference}"] * scale,
                "probe_time_per_step_vs_reference": probe_ms / medians[f"probe_{reference}"] * scale,
                "saved_mb": saved[length] / 2**20,
                "memory_per_step_vs_reference": saved[length] / saved[int(reference)] * scale,
                "peak_mb": plain_peak / 2**20,
                "probe_peak_mb": probe_peak / 2**20,
                "probe_peak_vs_plain": probe_peak / plain_peak,
                "peak_per_step_vs_reference": plain_peak / peaks[f"plain_{reference}"] * scale,
                "probe_peak_per_step_vs_reference": probe_peak / peaks[f"probe_{reference}"] * scale,
            }
        results[cell] = rows
    return results


def bench_denormal(sizes: BenchSizes, device: torch.device, repeats: int) -> dict[str, dict[str, Any]]:
    """A vanishing model (ρ = 0.5) over a healthy one (ρ = 1), flush-to-zero on and off.

    Recurrent blocks orthogonal, rescaled to spectral radius ρ (``model.init.spectral_radius``);
    the LSTM keeps the config's forget-gate bias 1. SGD with lr 0 keeps ρ fixed across rounds.
    Per cell, the plain step and the probed step (``auto`` route) of both models, with and
    without flush-to-zero (CPU only), are timed in one interleaved set (each variant sets the
    flush mode it needs), so all eight see the same machine. ``slowdown`` = vanishing / healthy
    plain step with flush-to-zero (rnnflow's default); ``*_without_flush`` the same without;
    ``probed_*`` the same for the probed step. ``*_log10_ratio``, ``*_zero_steps``: each model's
    gradient profile, to show that it vanishes (None: ‖∂L/∂h_0‖ underflowed to 0).
    """
    inputs, targets = adding_batch(sizes.steps, sizes.batch, device)
    flush_modes = (True, False) if device.type == "cpu" else (True,)
    results = {}
    for cell in ("rnn", "lstm"):
        variants: dict[str, Callable[[], None]] = {}
        row: dict[str, Any] = {}
        for name, radius in (("vanishing", 0.5), ("healthy", 1.0)):
            init: dict[str, Any] = {"recurrent": "orthogonal", "spectral_radius": radius}
            if cell == "lstm":
                init["forget_bias"] = 1.0
            model = make_model(cell, sizes.hidden, device, init)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
            torch.set_flush_denormal(True)
            row.update({f"{name}_{k}": v for k, v in _vanishing_profile(model, inputs, targets).items()})
            plain, probed = step_functions(model, optimizer, inputs, targets)
            for flush in flush_modes:
                suffix = "" if flush else "_without_flush"
                for kind, run in (("plain", plain), ("probed", probed("auto"))):
                    variants[f"{kind}_{name}{suffix}"] = _with_flush(run, flush)
        medians = interleaved_timings(variants, repeats, device).medians
        torch.set_flush_denormal(True)
        for flush in flush_modes:
            suffix = "" if flush else "_without_flush"
            for kind in ("plain", "probed"):
                prefix = "" if kind == "plain" else "probed_"
                healthy, vanishing = medians[f"{kind}_healthy{suffix}"], medians[f"{kind}_vanishing{suffix}"]
                row[f"{prefix}slowdown{suffix}"] = vanishing / healthy
                row[f"{prefix}healthy_ms{suffix}"] = 1e3 * healthy
                row[f"{prefix}vanishing_ms{suffix}"] = 1e3 * vanishing
        results[cell] = row
    return results


def _with_flush(run: Callable[[], None], flush: bool) -> Callable[[], None]:
    def wrapped() -> None:
        torch.set_flush_denormal(flush)
        run()

    return wrapped


def _vanishing_profile(model: RecurrentNet, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
    """log10(‖∂L/∂h_0‖ / ‖∂L/∂h_{T-1}‖) (None where it underflowed to 0) and the steps with norm 0."""
    probe = GradientFlowProbe()
    with probe.attach(model):
        loss = nn.functional.mse_loss(model(inputs).squeeze(-1), targets)
    loss.backward()
    model.zero_grad(set_to_none=True)
    norms = next(iter(probe.gradient_flow().values())).hidden.double()
    ratio = float(torch.log10(norms[0] / norms[-1]))
    return {"log10_ratio": ratio if math.isfinite(ratio) else None, "zero_steps": int((norms == 0).sum())}


def bench_host_memory(sizes: BenchSizes, repeats: int) -> dict[str, Any]:
    """Plain LSTM step (CPU) with freed host memory kept (rnnflow's default) and returned (glibc's).

    Each variant runs in a fresh interpreter (:mod:`benchmarks.host_memory`), as a training
    process would: ``rounds`` rounds, order alternating, a few timed steps each; medians over all.
    ``speedup`` = step time returned / kept (> 1: keeping helps); ``*_faults_per_step``: minor page
    faults. Empty where the setting cannot be applied (no glibc).
    """
    samples: dict[bool, dict[str, list[float]]] = {
        keep: {"step_ms": [], "faults": []} for keep in (True, False)
    }
    rounds = max(1, math.ceil(repeats / 2))
    for round_index in range(rounds):
        for keep in (True, False) if round_index % 2 == 0 else (False, True):
            command = [
                sys.executable, "-m", "benchmarks.host_memory", "--keep", str(int(keep)),
                "--steps", str(sizes.steps), "--batch", str(sizes.batch), "--hidden", str(sizes.hidden),
                "--repeats", "3",
            ]  # fmt: skip
            result = subprocess.run(
                command, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1]
            )
            row = json.loads(result.stdout.strip().splitlines()[-1])
            if keep and not row["applied"]:
                return {}
            for key in ("step_ms", "faults"):
                samples[keep][key] += row[key]
    figures: dict[str, Any] = {"processes_per_variant": rounds}
    for keep, label in ((True, "kept"), (False, "returned")):
        figures[f"{label}_ms"] = statistics.median(samples[keep]["step_ms"])
        figures[f"{label}_faults_per_step"] = statistics.median(samples[keep]["faults"])
    figures["speedup"] = figures["returned_ms"] / figures["kept_ms"]
    return figures


EXPLAIN_INSTRUMENTS = (
    "trajectory",
    "activations",
    "gates",
    "lyapunov",
    "credit",
    "parameters",
    "verdict",
    "why",
)


def _explain_settings() -> dict[str, Any]:
    """The default config's ``diagnostics`` (explain_sequences and the lyapunov_* settings)."""
    from omegaconf import OmegaConf

    return dict(OmegaConf.load(CONF_DIR / "train.yaml").diagnostics)


def _instrument_work(layer: Any, model: nn.Module, settings: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """What each explanatory callback computes on one probed layer at ``settings`` (the defaults)."""
    from rnnflow.callbacks.parameters import exact_gradient_norms
    from rnnflow.callbacks.trajectory import sub_batch
    from rnnflow.probes.activations import activation_stats
    from rnnflow.probes.credit import credit_profile
    from rnnflow.probes.gates import gate_stats
    from rnnflow.probes.lyapunov import lyapunov_exponents
    from rnnflow.probes.profile_stats import decay_rate, log10_ratio
    from rnnflow.probes.trajectory import recompute

    part = sub_batch(layer, settings["explain_sequences"])

    def trajectory() -> Any:
        return recompute(part.spec, part.inputs, part.outputs, part.initial, part.initial_cell)

    shared = trajectory()

    def lyapunov() -> Any:
        sample = shared.head(settings["lyapunov_sequences"])  # the callbacks share one trajectory
        return lyapunov_exponents(
            sample,
            settings["lyapunov_count"],
            settings["lyapunov_qr_every"],
            segment=settings["lyapunov_segment"],
        )

    def parameters() -> Any:
        norms = exact_gradient_norms(model)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        ratios = {
            n: float(torch.linalg.vector_norm((p.detach() - before[n]).double()))
            for n, p in model.named_parameters()
        }
        return norms, ratios

    def verdict() -> Any:  # reads the probe's own norms (LayerBackward.hidden_profile)
        profile = layer.hidden_profile()
        return float(log10_ratio(profile)), float(decay_rate(profile))

    def why() -> Any:
        return layer.hidden_profile().cpu(), layer.cell_profile()

    work = {
        "trajectory": trajectory,
        "activations": lambda: activation_stats(shared),
        "lyapunov": lyapunov,
        "credit": lambda: credit_profile(shared, part.hidden_grad, part.cell_grad),
        "parameters": parameters,
        "verdict": verdict,
        "why": why,
    }
    if layer.spec.cell != "rnn":
        work["gates"] = lambda: gate_stats(shared)
    return work


def bench_explain(
    sizes: BenchSizes, device: torch.device, repeats: int, cells: tuple[str, ...] = ("lstm",)
) -> dict[str, dict[str, Any]]:
    """Cost of each explanatory instrument on a probe step, as a fraction of the probed step.

    The probed step (forward through the probe, backward, ``gradient_flow()``, optimizer step) and
    each instrument's own computation on that step's :class:`LayerBackward` (captured once) are
    timed interleaved; ``<instrument>_vs_probe`` = instrument time / probed step time. ``trajectory``
    (the gate recomputation shared by activations, gates and credit) is its own line. ``all_in_step``:
    the probed step with every instrument running as a consumer of the probe, over the plain probed step.
    """
    inputs, targets = adding_batch(sizes.steps, sizes.batch, device)
    return {cell: _explain_cell(cell, sizes, device, repeats, inputs, targets) for cell in cells}


def _explain_cell(
    cell: str,
    sizes: BenchSizes,
    device: torch.device,
    repeats: int,
    inputs: torch.Tensor,
    targets: torch.Tensor,
) -> dict[str, Any]:
    model = make_model(cell, sizes.hidden, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    captured: list[Any] = []

    def probed(consumer: Callable[[Any], None] | None = None) -> Callable[[], None]:
        return probed_step(model, optimizer, inputs, targets, "auto", consumer)

    def capture(layer: Any) -> None:
        captured[:] = [layer]

    probed(capture)()
    # Read once: loading the YAML inside the timed step cost ~6 ms, not rnnflow's time.
    settings = _explain_settings()
    work = _instrument_work(captured[0], model, settings)

    def everything(layer: Any) -> None:
        tasks = _instrument_work(layer, model, settings)  # computes the shared trajectory once
        for name, task in tasks.items():
            if name != "trajectory":
                task()

    variants: dict[str, Callable[[], Any]] = {"probed": probed(), "all_in_step": probed(everything)}
    variants.update(work)
    timings = interleaved_timings(variants, repeats, device)
    medians = timings.medians
    step = medians["probed"]
    row: dict[str, Any] = {"probed_ms": 1e3 * step, "probed_spread": timings.spread("probed")}
    for name in EXPLAIN_INSTRUMENTS:
        if name in medians:
            row[f"{name}_ms"] = 1e3 * medians[name]
            row[f"{name}_vs_probe"] = medians[name] / step
    row["instruments_sum_vs_probe"] = sum(medians[n] for n in work) / step
    row["all_in_step_vs_probe"] = medians["all_in_step"] / step
    return row
