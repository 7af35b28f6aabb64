"""A plain training step (LSTM unless ``--cell``) in a fresh process, with or without freed host memory kept.

    python -m benchmarks.host_memory --keep 1 --steps 1000 --batch 64 --hidden 128 --repeats 3

prints one JSON line: ``{"keep": bool, "applied": bool, "step_ms": [...], "faults": [...]}``,
the wall time and minor page faults of each timed step (after two warm-up steps that settle the
heap). A fresh interpreter per setting, because glibc's allocator state cannot be put back to a
fresh process's once memory has been kept (a trimmed heap still reuses its free blocks).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from benchmarks.suite import adding_batch, make_model, step_functions
from rnnflow.runtime.host_settings import apply_host_settings


def measure(keep: bool, steps: int, batch: int, hidden: int, repeats: int, cell: str = "lstm") -> dict:
    applied = apply_host_settings(flush_denormal=True, keep_freed_memory=keep)
    device = torch.device("cpu")
    model = make_model(cell, hidden, device)
    step, _ = step_functions(
        model, torch.optim.SGD(model.parameters(), lr=0.0), *adding_batch(steps, batch, device)
    )
    step()
    step()
    times, faults = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        step()
        times.append(1e3 * (time.perf_counter() - start))
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {"keep": keep, "applied": applied, "step_ms": times, "faults": faults}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=int, choices=(0, 1), required=True)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cell", choices=("rnn", "lstm", "gru"), default="lstm")
    args = parser.parse_args()
    print(json.dumps(measure(bool(args.keep), args.steps, args.batch, args.hidden, args.repeats, args.cell)))


if __name__ == "__main__":
    main()
