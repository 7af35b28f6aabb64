"""Callbacks that make every run, however short, end with validation and an HParams entry."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from rnnflow.callbacks.schedule import is_last_batch
from rnnflow.probes.profile_stats import decay_rate, log10_ratio
from rnnflow.report.profiles import RunProfiles, load_profiles


class ValidateAtEnd(L.Callback):
    """Validate (and so checkpoint) after the last training step.

    Lightning validates every ``val_check_interval`` batches but not at ``max_steps``
    unless it is a multiple of it. Requesting a stop at the last step makes Lightning's
    own loop run validation there (``Trainer.should_stop`` triggers a final check).
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if is_last_batch(trainer, pl_module, started=False):
            trainer.should_stop = True


class HParamsSummary(L.Callback):
    """Write the run's hyperparameters with its final metrics to the HParams tab.

    ``hparams`` are the table's columns of settings: by default (:func:`hparam_columns`) the keys
    the command line set (in a sweep: what the jobs differ in) plus the cell and the task, so that
    the table shows what was varied rather than every key of the config. The metric columns:
    the last ``val/loss``, ``val/solved``, ``val/accuracy``, ``val/baseline_loss`` and, per layer,
    ``log10_ratio`` and ``decay_rate`` of the last gradient-flow probe (from the run's profile
    records, :mod:`rnnflow.report.profiles`). They are logged under ``hparams/<name>`` (e.g.
    ``hparams/val_loss``, ``hparams/layer0_log10_ratio``) so that the ``val/*`` and
    ``grad_flow/*`` curves keep only their real points.
    """

    def __init__(
        self,
        hparams: Mapping[str, Any],
        metrics: tuple[str, ...] = ("val/loss", "val/solved", "val/accuracy"),
        run_dir: str | Path | None = None,
    ) -> None:
        self.hparams = dict(hparams)
        self.metrics = metrics
        self.run_dir = Path(run_dir) if run_dir is not None else None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        final = {}
        for name in (*self.metrics, "val/baseline_loss"):
            if name in trainer.callback_metrics:
                final["hparams/" + name.replace("/", "_")] = float(trainer.callback_metrics[name])
        tensorboard = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if self.run_dir is not None and tensorboard:
            tensorboard[0].experiment.flush()  # the profile records are read back from the event file
            for layer, stats in layer_headline(load_profiles(self.run_dir)).items():
                for name in ("log10_ratio", "decay_rate"):
                    final[f"hparams/{layer.replace('/', '_')}_{name}"] = stats[name]
        final = {k: v for k, v in final.items() if math.isfinite(v)}
        for logger in tensorboard:
            logger.log_hyperparams(self.hparams, metrics=final)


def layer_headline(profiles: RunProfiles) -> dict[str, dict[str, float]]:
    """Per layer: ``log10_ratio``, ``decay_rate`` of its last probe's ‖∂L/∂h_t‖ (``cell_*``: ‖∂L/∂c_t‖)."""
    stats = {}
    for layer in profiles.layers:
        record = profiles.at(layer)
        stats[layer] = {"step": float(record.step), "length": float(record.length)}
        for name, prefix in (("hidden", ""), ("cell", "cell_")):
            values = record.series.get(name)
            if values is not None:
                profile = torch.from_numpy(np.asarray(values, dtype=np.float64))
                stats[layer][prefix + "log10_ratio"] = float(log10_ratio(profile))
                stats[layer][prefix + "decay_rate"] = float(decay_rate(profile))
    return stats


def hparam_columns(cfg: Any, overrides: Sequence[str] | None) -> dict[str, Any]:
    """The HParams columns of a run: the cell, the task, and every key the command line set."""
    columns: dict[str, Any] = {"model": cfg.model.get("cell", ""), "task": cfg.task.get("name", "")}
    for override in overrides or []:
        key, _, value = override.lstrip("+~").partition("=")
        if key.startswith("hydra.") or key == "ckpt_path":
            continue
        columns[key] = _number_or_text(value)
    return columns


def _number_or_text(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value
