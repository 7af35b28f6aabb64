"""Everything rnnflow does on a GPU, checked in one command (about 5-8 minutes on one NVIDIA GPU).

    python -m benchmarks.gpu_check [--out gpu_check] [--dry-run] [--skip tests,bench,...]

Steps, each timed, its result and figures collected in ``<out>/gpu_check.json`` and a table:

1. ``tests``: the test suite's ``gpu``-marked tests (``pytest -m gpu``).
2. ``default_gpu``, ``bf16_mixed``, ``16_mixed``, ``ddp_1_device``: the default experiment
   (``python scripts/train.py``) with ``trainer=gpu``, with ``trainer.precision=bf16-mixed`` and
   ``16-mixed``, and with ``trainer=ddp trainer.devices=1``; each must exit 0 and write every
   ``grad_flow/layer*/…`` tag of a probe step (``log10_ratio``, ``decay_rate``, ``profile_log10/t…``) with
   finite values. The variants run fewer steps (``--variant-steps``) to stay inside the budget.
3. ``autocast_exactness``: the probe under ``torch.autocast`` (bf16 and fp16; LSTM, GRU, RNN) on the
   GPU against an unrolled float64 reference on the same GPU, run on the same (rounded) weights
   and inputs: the per-step norms must agree to the autocast dtype's precision (relative error at
   most ``8·ε·√T``, ε the dtype's machine epsilon), and the float32 probe to 1e-4.
4. ``multirun``: a 2-job sweep (``-m hydra/launcher=parallel hydra.launcher.n_jobs=2 seed=0,1``),
   each job pinned to a GPU (both to the one GPU where only one exists); both must finish.
5. ``bench``: ``scripts/bench.py --device cuda`` (LSTM, GRU, RNN at H = 256, T = 1000, B = 128):
   rnnflow step vs hand-written loop, probed vs plain step and its GPU memory peak, amortized
   overhead, length scaling, each instrument's cost; its figures are copied into the JSON.

``--dry-run`` runs the same sequence on the CPU at tiny sizes (the bench with ``--quick``, its probe
and instruments sections; both precision runs with bf16-mixed, the CPU's mixed precision): the
tests run it so that this script cannot rot. The exit status is 1 if any step failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.hidden_size=8",
    "task.seq_len=12",
    "task.batch_size=8",
    "task.val_batches=1",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=1",
    "diagnostics.every_n_steps=2",
    "diagnostics.spectral_every_n_steps=2",
]
GRAD_FLOW_TAGS = ("log10_ratio", "decay_rate")


@dataclass
class Step:
    """One step of the check: what ran, whether it passed, what it measured."""

    name: str
    passed: bool = False
    seconds: float = 0.0
    detail: str = ""
    figures: dict[str, Any] = field(default_factory=dict)


def _run(command: list[str], log: Path, timeout: float, env: dict[str, str] | None = None) -> int:
    """Run ``command`` from the repository root, its output into ``log``; the exit status (124: timeout)."""
    with log.open("w") as out:
        try:
            return subprocess.run(
                command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, env=env
            ).returncode
        except subprocess.TimeoutExpired:
            return 124


def _scalars(run_dir: Path) -> dict[str, list[float]]:
    """``{tag: [values]}`` of every TensorBoard event file under ``run_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict[str, list[float]] = {}
    for events in run_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            values.setdefault(tag, []).extend(event.value for event in accumulator.Scalars(tag))
    return values


def check_grad_flow(run_dir: Path) -> tuple[bool, str, dict[str, Any]]:
    """Every layer's ``grad_flow`` tags of a probe step exist and every logged value is finite."""
    scalars = _scalars(run_dir)
    layers = sorted({tag.split("/")[1] for tag in scalars if tag.startswith("grad_flow/")})
    if not layers:
        return False, f"no grad_flow tags under {run_dir}", {}
    problems = []
    for layer in layers:
        for name in GRAD_FLOW_TAGS:
            if f"grad_flow/{layer}/{name}" not in scalars:
                problems.append(f"grad_flow/{layer}/{name} missing")
        if not any(tag.startswith(f"grad_flow/{layer}/profile_log10/t") for tag in scalars):
            problems.append(f"grad_flow/{layer}/profile_log10/t* missing")
    grad_tags = {tag: v for tag, v in scalars.items() if tag.startswith("grad_flow/")}
    bad = [tag for tag, values in grad_tags.items() if not all(math.isfinite(v) for v in values)]
    problems += [f"{tag} not finite" for tag in bad]
    figures = {
        "layers": layers,
        "grad_flow_tags": len(grad_tags),
        "log10_ratio_last": {layer: scalars[f"grad_flow/{layer}/log10_ratio"][-1] for layer in layers}
        if not problems
        else None,
        "train_loss_last": scalars.get("train/loss", [math.nan])[-1],
    }
    return not problems, "; ".join(problems) or f"{len(grad_tags)} grad_flow tags, all finite", figures


def train_step(
    name: str, overrides: list[str], out: Path, timeout: float, env: dict[str, str] | None = None
) -> Step:
    """``python scripts/train.py <overrides>`` into ``<out>/<name>``: exit 0 and finite grad_flow tags."""
    step = Step(name)
    run_dir = out / name
    code = _run(
        [sys.executable, "scripts/train.py", *overrides, f"hydra.run.dir={run_dir}"],
        out / f"{name}.log",
        timeout,
        env,
    )
    if code != 0:
        step.detail = f"exit {code}, see {out / f'{name}.log'}"
        return step
    step.passed, step.detail, step.figures = check_grad_flow(run_dir)
    return step


def autocast_exactness(device: str, dtypes: list[str]) -> Step:
    """The probe under autocast (and in float32) against an unrolled float64 reference on ``device``.

    The reference runs on the weights and inputs rounded to the autocast dtype, in float64; the
    probe's per-step norms must agree with it to ``8·ε·√T`` relative (ε of the dtype), the float32
    probe's to 1e-4. Both are taken where the reference's norm is above 1e-30 of its largest.
    """
    import torch
    from torch import nn

    sys.path.insert(0, str(ROOT / "tests"))
    from reference_cells import UnrolledReference

    import rnnflow

    step = Step("autocast_exactness", passed=True)
    steps, batch, hidden = 40, 8, 32
    dev = torch.device(device)
    problems = []
    for cell in (nn.LSTM, nn.GRU, nn.RNN):
        for dtype_name in ["float32", *dtypes]:
            dtype = getattr(torch, dtype_name)
            torch.manual_seed(0)
            module = cell(4, hidden, batch_first=True).to(dev)
            x = torch.randn(batch, steps, 4, device=dev)
            with torch.no_grad():  # what autocast feeds its matmuls: operands rounded to dtype
                for parameter in module.parameters():
                    parameter.copy_(parameter.to(dtype).float())
                x = x.to(dtype).float()
            target = torch.linspace(-1, 1, hidden, device=dev)
            autocast = torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32)
            with autocast, rnnflow.gradient_flow(module) as flow:
                output, _ = module(x)
                (output.float()[:, -1] * target).sum().backward()
            probe = next(iter(flow.profiles.values())).double()
            reference_module = cell(4, hidden, batch_first=True).to(dev).double()
            reference_module.load_state_dict(module.state_dict())
            reference = UnrolledReference()
            out, _ = reference.layer_call(0, reference_module, x.double())
            (out[:, -1] * target.double()).sum().backward()
            expected = reference.hidden_grads(0).square().sum(dim=(1, 2)).sqrt()
            keep = expected > 1e-30 * expected.max()
            error = float(((probe - expected).abs()[keep] / expected[keep]).max())
            tolerance = 1e-4 if dtype == torch.float32 else 8 * torch.finfo(dtype).eps * math.sqrt(steps)
            key = f"{cell.__name__}/{dtype_name}"
            step.figures[key] = {"max_relative_error": error, "tolerance": tolerance}
            if not error <= tolerance:
                step.passed = False
                problems.append(f"{cell.__name__} {dtype_name}: {error:.2e} > {tolerance:.2e}")
    step.detail = "; ".join(problems) or "every cell and dtype within tolerance"
    return step


def multirun(out: Path, trainer: str, tiny: list[str], timeout: float) -> Step:
    """A 2-job parallel sweep (seed=0,1), each job pinned to a GPU by rnnflow's launcher; both finish."""
    step = Step("multirun")
    sweep = out / "multirun"
    command = [
        sys.executable, "scripts/train.py", "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2",
        f"trainer={trainer}", "seed=0,1", *tiny, f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    code = _run(command, out / "multirun.log", timeout)
    finished = sorted(p.parent.parent.name for p in sweep.rglob("checkpoints/last.ckpt"))
    step.figures = {"exit": code, "jobs_with_last_checkpoint": finished}
    step.passed = code == 0 and len(finished) == 2
    step.detail = f"exit {code}, {len(finished)} of 2 jobs wrote last.ckpt"
    return step


def bench(out: Path, device: str, dry_run: bool, timeout: float) -> Step:
    step = Step("bench")
    figures_file = out / "bench.json"
    # A dry run checks that the bench runs and reports, not what it measures: two sections, tiny sizes.
    sections = "probe,instruments" if dry_run else "probe,instruments,lightning,amortized,lengths"
    command = [
        sys.executable, "scripts/bench.py", "--device", device, "--repeats", "1" if dry_run else "3",
        "--only", sections, "--json", str(figures_file),
    ]  # fmt: skip
    if dry_run:
        command.append("--quick")
    code = _run(command, out / "bench.log", timeout)
    if code != 0 or not figures_file.exists():
        step.detail = f"exit {code}, see {out / 'bench.log'}"
        return step
    figures = json.loads(figures_file.read_text())
    step.figures = {
        row["figure"]: {k: row[k] for k in ("value", "goal", "result")} for row in figures["table"]
    }
    rows = dict(step.figures)
    step.figures["peak_memory"] = {
        cell: {"plain_bytes": row["plain_peak_bytes"], "probed_bytes": row["auto_peak_bytes"]}
        for cell, row in figures.get("probe", {}).items()
    }
    step.figures["environment"] = figures["environment"]
    failed = [name for name, row in rows.items() if row["result"] == "FAIL"]
    step.passed = True  # the bench ran; goals missed are reported in the table, not a failed check
    step.detail = f"{len(rows)} figures, goals missed: {', '.join(failed) or 'none'}"
    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path("gpu_check"), help="where logs, runs and the JSON go"
    )
    parser.add_argument("--dry-run", action="store_true", help="the same sequence on the CPU at tiny sizes")
    parser.add_argument("--variant-steps", type=int, default=300, help="max_steps of the precision/ddp runs")
    parser.add_argument("--skip", default="", help="comma-separated steps to skip (tests, bench, ...)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device: run on a GPU machine, or --dry-run")
    trainer = "cpu" if args.dry_run else "gpu"
    tiny = TINY if args.dry_run else []
    variant = tiny if args.dry_run else [f"trainer.max_steps={args.variant_steps}"]
    # CPU mixed precision is bf16; a dry run exercises the same code path with it twice.
    half = "bf16-mixed" if args.dry_run else "16-mixed"
    ddp = ["trainer=ddp", "trainer.devices=1"] + (["trainer.accelerator=cpu"] if args.dry_run else [])
    long = 600.0
    on_device = [f"trainer={trainer}", *variant]
    device = "cpu" if args.dry_run else "cuda"
    dtypes = ["bfloat16"] if args.dry_run else ["bfloat16", "float16"]
    plan: list[tuple[str, Callable[[], Step]]] = [
        ("tests", lambda: _tests(out, long)),
        ("default_gpu", lambda: train_step("default_gpu", [f"trainer={trainer}", *tiny], out, long)),
        (
            "bf16_mixed",
            lambda: train_step("bf16_mixed", [*on_device, "trainer.precision=bf16-mixed"], out, long),
        ),
        ("16_mixed", lambda: train_step("16_mixed", [*on_device, f"trainer.precision={half}"], out, long)),
        ("ddp_1_device", lambda: train_step("ddp_1_device", [*ddp, *variant], out, long)),
        ("autocast_exactness", lambda: autocast_exactness(device, dtypes)),
        ("multirun", lambda: multirun(out, trainer, tiny or ["trainer.max_steps=200"], long)),
        ("bench", lambda: bench(out, device, args.dry_run, long)),
    ]
    steps = []
    for name, run in plan:
        if name in skip:
            continue
        print(f"{name} ...", flush=True)
        started = time.perf_counter()
        try:
            step = run()
        except Exception as error:  # a broken step is a failed check, and the others still run
            step = Step(name, detail=f"{type(error).__name__}: {error}")
        step.seconds = time.perf_counter() - started
        steps.append(step)
        print(f"  {'pass' if step.passed else 'FAIL'} ({step.seconds:.0f} s): {step.detail}", flush=True)
    report = {
        "device": _device_name(args.dry_run),
        "dry_run": args.dry_run,
        "steps": [asdict(step) for step in steps],
        "passed": all(step.passed for step in steps),
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    _print_table(report)
    return 0 if report["passed"] else 1


def _tests(out: Path, timeout: float) -> Step:
    step = Step("tests")
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    code = _run(command, out / "tests.log", timeout)
    # 5: nothing collected/selected; without a GPU every gpu test is skipped, which is not a failure.
    step.passed = code in (0, 5)
    tail = (out / "tests.log").read_text().strip().splitlines()[-1:] or [""]
    step.detail = f"exit {code}: {tail[0]}"
    return step


def _device_name(dry_run: bool) -> str:
    if dry_run:
        return "cpu (dry run)"
    import torch

    return torch.cuda.get_device_name(0)


def _print_table(report: dict[str, Any]) -> None:
    print(f"\nrnnflow GPU check on {report['device']}: {'all passed' if report['passed'] else 'FAILED'}")
    print(f"{'step':22s} {'result':6s} {'seconds':>8s}  detail")
    for step in report["steps"]:
        result = "pass" if step["passed"] else "FAIL"
        print(f"{step['name']:22s} {result:6s} {step['seconds']:8.0f}  {step['detail']}")
    bench = next((s for s in report["steps"] if s["name"] == "bench"), None)
    if bench and bench["figures"]:
        print(f"\n{'bench figure':40s} {'value':>10s}  {'goal':>12s}  result")
        for name, row in bench["figures"].items():
            if isinstance(row, dict) and "value" in row:
                print(f"{name:40s} {row['value']:10.4f}  {row['goal']:>12s}  {row['result']}")
        for cell, row in bench["figures"].get("peak_memory", {}).items():
            print(f"peak memory {cell}: plain {row['plain_bytes']:,d} B, probed {row['probed_bytes']:,d} B")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
