"""Checks of a resume (``ckpt_path=...``) made before anything is built or trained.

A resume restores the weights, the optimizer, the loops (the step, the position in the data
stream) and every callback's state, such as the gradient-flow heatmap rows of the run so far.
Those rows, and the run's TensorBoard curves, assume one data shape: the input length T
(``task.seq_len`` and the task's layout), the input size and the read-out. A resume that changes
the data shape would train and then fail when it draws its first figure, having saved nothing;
it is refused here instead, in one line naming the keys that differ.

Which TensorBoard step the resumed run logs at needs no help: the checkpoint callback
(:mod:`rnnflow.runtime.checkpoint`) saves only at the end of a training batch, the point from
which Lightning's loops restore their counters exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rnnflow.config import ConfigError
from rnnflow.runtime.build import TASK_BUILD_EXCLUDE, build_task_from_config
from rnnflow.runtime.checkpoint_check import load_checkpoint
from rnnflow.tasks import SyntheticTask, build_task


def data_shape(task: SyntheticTask) -> dict[str, Any]:
    """What a run's data looks like to the model and to the diagnostics: length T, sizes, read-out."""
    return {
        "length": task.total_len,
        "input_size": task.input_size,
        "vocab_size": task.vocab_size,
        "output_size": task.output_size,
        "readout": task.readout,
    }


def read_hparams(ckpt_path: str | Path) -> dict[str, Any]:
    """The flat hyperparameters (``{"task.seq_len": 50, ...}``) recorded in a checkpoint.

    Raises :class:`ConfigError` (one line) for a file that is not a readable checkpoint.
    """
    state = load_checkpoint(ckpt_path)
    hparams = state.get("hyper_parameters", {})
    return dict(hparams) if isinstance(hparams, dict) else {}


def _task_of(hparams: dict[str, Any]) -> SyntheticTask | None:
    params = {
        key[len("task.") :]: value
        for key, value in hparams.items()
        if key.startswith("task.") and key.count(".") == 1 and key[len("task.") :] not in TASK_BUILD_EXCLUDE
    }
    name = hparams.get("task.name")
    if name is None:
        return None
    try:
        return build_task(name, **params)
    except (TypeError, ValueError):  # recorded by another rnnflow version: nothing to compare with
        return None


def check_resume(cfg: DictConfig, ckpt_path: str | Path) -> None:
    """Refuse (:class:`ConfigError`) a resume whose config changes the data shape of its checkpoint."""
    recorded = read_hparams(ckpt_path)
    before = _task_of(recorded)
    if before is None:
        return
    after = build_task_from_config(cfg)
    if data_shape(before) == data_shape(after):
        return
    now = {f"task.{k}": v for k, v in cfg.task.items() if f"task.{k}" in recorded}
    keys = sorted(k for k in now if now[k] != recorded[k]) or ["task"]
    changes = ", ".join(f"{k}={recorded.get(k)!r} -> {now.get(k)!r}" for k in keys)
    shape = ", ".join(
        f"{k} {data_shape(before)[k]} -> {data_shape(after)[k]}"
        for k in data_shape(before)
        if data_shape(before)[k] != data_shape(after)[k]
    )
    raise ConfigError(
        f"ckpt_path={str(ckpt_path)!r}: resuming with {changes} changes the data shape ({shape}), which a "
        "resumed run cannot continue; keep the checkpoint's values or start a new run"
    )
