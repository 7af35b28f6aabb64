"""Timing helpers: interleaved medians, per-iteration clocks for Lightning, activation memory.

Every comparison in :mod:`benchmarks.suite` runs its variants in one process and
interleaves them (round ``r`` runs ``A, B, C`` for even ``r`` and ``C, B, A`` for odd ``r``),
so that drift (thermal, other processes, allocator state) hits every variant alike, and
reports the median over rounds. GPU work is asynchronous: every clock reading is preceded by
``torch.cuda.synchronize``.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import lightning as L
import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """``time.perf_counter()`` after the device has finished its queued work."""
    synchronize(device)
    return time.perf_counter()


@dataclass
class Timings:
    """All samples (seconds) of each variant and their medians."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def medians(self) -> dict[str, float]:
        return {name: statistics.median(values) for name, values in self.samples.items()}

    def spread(self, name: str) -> float:
        """Relative half-range of the middle half of the samples (a robust noise figure)."""
        values = sorted(self.samples[name])
        if len(values) < 4:
            return (values[-1] - values[0]) / (2 * statistics.median(values))
        q1, _, q3 = statistics.quantiles(values, n=4)
        return (q3 - q1) / (2 * statistics.median(values))


def interleaved_timings(
    variants: dict[str, Callable[[], Any]], repeats: int, device: torch.device, warmup: int = 1
) -> Timings:
    """Wall time of each variant, ``warmup`` untimed rounds first, then ``repeats`` interleaved rounds."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    timings = Timings({name: [] for name in names})
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else names[::-1]:
            start = clock(device)
            variants[name]()
            timings.samples[name].append(clock(device) - start)
    return timings


class IterationClock(L.Callback):
    """Timestamps at the start of every training batch and at the end of training.

    Interval ``k`` (batch ``k``'s start to batch ``k+1``'s) holds everything the loop does for
    one batch: the step itself, every callback's batch-end hook, logging, and fetching and
    generating the next batch. Put this callback first in the list so its ``on_train_end``
    closes the last interval before other callbacks' end-of-training work.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stamps: list[float] = []
        self.fit_start = self.fit_end = 0.0

    def on_fit_start(self, *args: Any) -> None:
        self.fit_start = clock(self.device)

    def on_train_batch_start(self, *args: Any) -> None:
        self.stamps.append(clock(self.device))

    def on_train_end(self, *args: Any) -> None:
        self.stamps.append(clock(self.device))

    def on_fit_end(self, *args: Any) -> None:
        self.fit_end = clock(self.device)

    @property
    def intervals(self) -> list[float]:
        """Seconds per batch, in batch order."""
        return [b - a for a, b in pairwise(self.stamps)]


HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
    "on_probe_layer",
    "on_probe_end",
)
"""The per-batch hooks an instrument may implement (Lightning's, and rnnflow's ProbeListener's)."""


class HookClock(L.Callback):
    """Time every other callback spends in its per-batch hooks, per training batch.

    At fit start it wraps, on each callback instance of ``trainer.callbacks`` (but itself), the
    hooks of :data:`HOOKS` its class overrides, so that the wall time of each call is added to
    ``seconds[callback class name][batch index]``. Put it first in the callback list.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.batch = -1
        self.seconds: dict[str, dict[int, float]] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for callback in trainer.callbacks:
            if callback is self:
                continue
            name = type(callback).__name__
            for hook in HOOKS:
                if getattr(type(callback), hook, None) in (None, getattr(L.Callback, hook, None)):
                    continue
                self.seconds.setdefault(name, {})
                setattr(callback, hook, self._timed(name, getattr(callback, hook)))

    def _timed(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock(self.device)
            try:
                return method(*args, **kwargs)
            finally:
                per_batch = self.seconds[name]
                per_batch[self.batch] = per_batch.get(self.batch, 0.0) + clock(self.device) - start

        return timed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.batch += 1


def saved_activation_bytes(run: Callable[[], Any]) -> int:
    """Bytes of every tensor autograd saves for backward while ``run`` executes.

    This is the activation memory of a training step (parameters that a node saves count
    once per node: a constant next to the activations that grow with T).
    """
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return total


def peak_cuda_bytes(run: Callable[[], Any], device: torch.device) -> int:
    """Peak CUDA memory allocated during ``run`` above what was allocated before it."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def peak_memory_bytes(run: Callable[[], Any], device: torch.device) -> int:
    """Peak memory allocated while ``run`` executes, above what was allocated when it started.

    CUDA: the caching allocator's counters. CPU: PyTorch has no such counter, so the
    profiler records every allocation and free (``profile_memory``) and the peak of their
    running sum is taken; its per-event records are only exposed through the profiler's
    Kineto results (``prof.profiler.kineto_results``), which the aggregated tables drop.
    """
    if device.type == "cuda":
        return peak_cuda_bytes(run, device)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = [event for event in prof.profiler.kineto_results.events() if event.name() == "[memory]"]
    total = peak = 0
    for event in sorted(events, key=lambda event: event.start_ns()):
        if event.device_type() == torch.autograd.DeviceType.CPU:
            total += event.nbytes()
            peak = max(peak, total)
    return peak


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS does not report them)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None
