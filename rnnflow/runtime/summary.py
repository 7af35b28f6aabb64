"""The run tells its story: a short summary at the end of every run, on the console and in ``train.log``.

At the end of training, and when a run stops early (SIGTERM or Ctrl-C, an error), rank 0 logs,
through the ``rnnflow`` logger (Hydra sends it to the console and to ``<run dir>/train.log``):

* the steps done and the wall time of this process;
* the final ``val/loss`` against the task's trivial-baseline loss ``val/baseline_loss`` and,
  where the task defines it, whether it is solved (``val/solved``);
* per layer, from the last gradient-flow probe (the full profile ``n_t = ‖∂L/∂h_t‖`` stored in
  the event file, :mod:`rnnflow.report.profiles`): ``log10(n_0 / n_{T-1})`` and the fitted per-step
  factor α (:mod:`rnnflow.probes.profile_stats`), then the verdict lines of
  :func:`rnnflow.report.verdict.verdict_lines` on the last value of every scalar the run wrote;
* clipping: off, or how many optimizer steps were clipped;
* the run directory, the ``tensorboard --logdir`` command that shows it, and the command that
  resumes it from ``checkpoints/last.ckpt`` (when that file exists).

:func:`route_lightning_logs` makes Lightning's own log lines reach ``train.log`` as well.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shlex
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from rnnflow.callbacks.clipping import ClipMonitor
from rnnflow.callbacks.logging import batch_step
from rnnflow.callbacks.verdict import VerdictMonitor
from rnnflow.config.command_line import shell_override
from rnnflow.report.profiles import ProfileReader, load_profiles
from rnnflow.report.verdict import verdict_lines
from rnnflow.runtime.run_end import layer_headline

log = logging.getLogger("rnnflow")


def route_lightning_logs() -> None:
    """Send Lightning's log lines through the root logger (Hydra's console and ``train.log`` handlers).

    When Lightning is imported before Hydra configures logging, its loggers get console handlers
    of their own and ``lightning.pytorch``/``lightning.fabric`` stop propagation: nothing of them
    reaches ``train.log``, and re-enabling propagation alone would print every line twice.
    """
    if not logging.getLogger().handlers:
        return  # nobody configured logging (no Hydra): leave Lightning's console handlers alone
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True


def _metric(trainer: L.Trainer, name: str) -> float:
    value = trainer.callback_metrics.get(name)
    return float(value) if value is not None else math.nan


class RunSummary(L.Callback):
    """Log the run's summary at its end (see the module docstring).

    Args:
        run_dir: the run directory.
        overrides: the command line's overrides (to repeat them in the resume command).
        log_root: the directory all runs live under (``paths.log_dir``), for a second TensorBoard command.
        clip_max_norm: the clipping threshold (None: clipping off).
        cell, nonlinearity, seq_len: the model's cell and nonlinearity and the task's length, for the verdict.
        settings: the run's config (``model``, ``clip``, ...), so the verdict does not offer a remedy
            already in effect.
    """

    def __init__(
        self,
        run_dir: str | Path,
        overrides: Sequence[str] = (),
        log_root: str | Path | None = None,
        clip_max_norm: float | None = None,
        sweep_dir: str | Path | None = None,
        cell: str = "",
        nonlinearity: str | None = None,
        seq_len: int | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.overrides = list(overrides)
        self.log_root = Path(log_root).resolve() if log_root is not None else None
        self.clip_max_norm = clip_max_norm
        self.sweep_dir = Path(sweep_dir).resolve() if sweep_dir is not None else None
        self.cell, self.nonlinearity, self.seq_len = cell, nonlinearity, seq_len
        self.settings = settings
        self._start = time.monotonic()
        self.lines: list[str] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, "finished")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, SIGTERMException):
            signum = getattr(exception, "signum", None)
            how = "stopped by Ctrl-C" if signum == 2 else "stopped by SIGTERM"
        elif isinstance(exception, KeyboardInterrupt):
            how = "aborted by Ctrl-C"
        else:
            how = f"failed ({type(exception).__name__}: {exception})"
        self._report(trainer, how)

    def summary(self, trainer: L.Trainer, how: str) -> list[str]:
        """The summary's lines."""
        steps = batch_step(trainer)
        lines = [f"rnnflow: run {how} after {steps} steps in {time.monotonic() - self._start:.1f} s"]
        lines.append("  " + self._loss_line(trainer))
        lines += ["  " + line for line in self._layer_lines(trainer)]
        lines.append("  " + self._clip_line(trainer))
        lines.append(f"  run dir:     {self.run_dir}")
        command = f"tensorboard --logdir {shlex.quote(str(self.run_dir))}"
        if self.sweep_dir is not None and self.sweep_dir in self.run_dir.parents:
            # The sweep's dir as logdir: its runs are named by what differs (<num>_<overrides>/tb).
            command = f"tensorboard --logdir {shlex.quote(str(self.sweep_dir))}   (the whole sweep)"
        elif self.log_root is not None and self.log_root in self.run_dir.parents:
            command += f"   (every run: tensorboard --logdir {shlex.quote(str(self.log_root))})"
        lines.append(f"  look at it:  {command}")
        layers = load_profiles(self.run_dir).layers
        lines.append(f"               then open {headline_url(layers)}")
        checkpoint = self.run_dir / "checkpoints" / "last.ckpt"
        if checkpoint.is_file():
            # A finished run resumes to go further: twice the steps (Hydra refuses a key given twice).
            replaced = {"ckpt_path"} | ({"trainer.max_steps"} if how == "finished" else set())
            kept = [o for o in self.overrides if o.lstrip("+~").partition("=")[0] not in replaced]
            parts = [
                "python scripts/train.py",
                *map(shlex.quote, kept),
                shell_override("ckpt_path", str(checkpoint)),
            ]
            if how == "finished":
                parts.append(f"trainer.max_steps={2 * max(trainer.max_steps, steps, 1)}")
            lines.append(f"  resume:      {' '.join(parts)}")
        return lines

    def _loss_line(self, trainer: L.Trainer) -> str:
        loss, baseline = _metric(trainer, "val/loss"), _metric(trainer, "val/baseline_loss")
        if math.isnan(loss):
            return "val/loss: not measured"
        line = f"val/loss {loss:.4g}"
        if math.isfinite(baseline) and baseline > 0:
            line += f" vs the baseline {baseline:.4g} ({loss / baseline:.1%} of it)"
        solved = _metric(trainer, "val/solved")
        if not math.isnan(solved):
            line += ": solved" if solved > 0.5 else ": not solved"
        return line

    def _layer_lines(self, trainer: L.Trainer) -> list[str]:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.flush()  # the profile records are read back from the event file
        lines = []
        for layer, stats in layer_headline(load_profiles(self.run_dir)).items():
            parts = []
            for prefix, label in (("", "h"), ("cell_", "c")):
                if prefix + "log10_ratio" in stats:
                    ratio, alpha = stats[prefix + "log10_ratio"], stats[prefix + "decay_rate"]
                    parts.append(f"{label}: log10 ratio {ratio:+.2f}, decay rate α {alpha:.4g}")
            lines.append(f"{layer} (step {stats['step']:.0f}, T={stats['length']:.0f}): " + "; ".join(parts))
        if not lines:
            return ["gradient flow: no probe (diagnostics.every_n_steps=null?)"]
        monitor = next((c for c in trainer.callbacks if isinstance(c, VerdictMonitor)), None)
        verdicts = list(monitor.lines) if monitor is not None and monitor.lines else []
        if not verdicts:  # no verdict callback, or the run stopped before its end of training
            reader = ProfileReader(self.run_dir, scalar_tags=re.compile(".*"))
            reader.update()
            last = {tag: values[max(values)] for tag, values in reader.scalars.items() if values}
            for name in ("val/loss", "val/baseline_loss"):
                if math.isfinite(_metric(trainer, name)):
                    last[name] = _metric(trainer, name)
            verdicts = verdict_lines(last, self.cell, self.nonlinearity, self.seq_len, settings=self.settings)
        return lines + [f"verdict: {line}" for line in verdicts]

    def _clip_line(self, trainer: L.Trainer) -> str:
        if self.clip_max_norm is None:
            return "clipping: off"
        monitor = next((c for c in trainer.callbacks if isinstance(c, ClipMonitor)), None)
        if monitor is None:
            return f"clipping: at {self.clip_max_norm} (not monitored)"
        monitor.flush(trainer)
        share = monitor.events / monitor.steps if monitor.steps else math.nan
        clipped = f"{monitor.events} of {monitor.steps} optimizer steps clipped ({share:.1%})"
        return f"clipping at {self.clip_max_norm}: {clipped}"

    def _report(self, trainer: L.Trainer, how: str) -> None:
        if not trainer.is_global_zero:
            return
        try:
            self.lines = self.summary(trainer, how)
        except Exception as error:  # a summary must never hide how the run ended
            self.lines = [f"rnnflow: run {how}; no summary ({type(error).__name__}: {error})"]
        log.info("\n".join(self.lines))


def headline_url(layers: Sequence[str], address: str = "http://localhost:6006") -> str:
    """TensorBoard's Time Series with the loss and each layer's ``log10_ratio`` pinned as its first cards.

    TensorBoard orders its cards by tag group alphabetically (``clip``, ``grad_flow``, …, ``train``),
    but restores pinned cards from the ``pinnedCards`` query parameter, shown above all others.
    """
    tags = ["train/loss", "val/loss", *(f"grad_flow/{layer}/log10_ratio" for layer in layers)]
    pins = json.dumps([{"plugin": "scalars", "tag": tag} for tag in tags], separators=(",", ":"))
    return f"{address}/?pinnedCards={urllib.parse.quote(pins, safe='[]{}:,/')}#timeseries"


def summary_callback(cfg: Any, overrides: Sequence[str] | None) -> RunSummary:
    """The :class:`RunSummary` of a composed config."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    clip = cfg.get("clip") or {}
    paths = cfg.get("paths") or {}
    sweep_dir = None
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sweep_dir = HydraConfig.get().sweep.dir
    return RunSummary(
        run_dir=paths.get("output_dir", "."),
        overrides=list(overrides or []),
        log_root=paths.get("log_dir"),
        clip_max_norm=clip.get("max_norm"),
        sweep_dir=sweep_dir,
        cell=str((cfg.get("model") or {}).get("cell", "")),
        nonlinearity=(cfg.get("model") or {}).get("nonlinearity"),
        seq_len=(cfg.get("task") or {}).get("seq_len"),
        settings={key: cfg.get(key) for key in ("model", "clip", "optim", "task") if key in cfg},
    )
