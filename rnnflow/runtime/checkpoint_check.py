"""Refuse a checkpoint that cannot resume this run, in one line, before training starts.

:func:`check_checkpoint` reads ``ckpt_path`` once (``torch.load(weights_only=True, mmap=True)``: the
tensors are mapped, not read) and raises :class:`rnnflow.config.ConfigError` when it is

* empty, not a checkpoint (a text file: torch's checkpoints are zip archives), truncated or
  corrupted (whatever torch's reader raises: ``EOFError``, ``KeyError``, a zip error, a
  weights-only refusal of garbled bytes);
* not a Lightning checkpoint (no ``state_dict``, no optimizer state);
* of another architecture: its ``state_dict`` does not fit the model built from the config; the
  message names the ``model.*``/``task.*`` keys whose recorded values (the checkpoint's
  hyper-parameters) differ from the config's, else the first parameters whose shapes differ;
* written with another optimizer (``optim._target_``, or optimizer state keys that the configured
  optimizer does not have, which torch would meet as ``KeyError: 'momentum'`` at the first step).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from rnnflow.config import ConfigError

ZIP_MAGIC = b"PK\x03\x04"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(error).__name__}: {line[:160]}" if line else type(error).__name__


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict, or :class:`ConfigError` saying why it cannot be read."""
    key = f"ckpt_path={str(path)!r}"
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}: expected an existing checkpoint file")
    size = path.stat().st_size
    if size == 0:
        raise ConfigError(
            f"{key}: the file is empty (0 bytes); expected a checkpoint (.ckpt) written by a run"
        )
    with path.open("rb") as handle:
        head = handle.read(4)
    if head != ZIP_MAGIC:
        raise ConfigError(
            f"{key}: not a checkpoint (torch checkpoints are zip archives; this file starts with {head!r})"
        )
    if not zipfile.is_zipfile(path):
        raise ConfigError(
            f"{key}: truncated or corrupted checkpoint ({size} bytes; its zip directory is missing)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001 - torch's reader raises many types on garbled bytes
        raise ConfigError(f"{key}: truncated or corrupted checkpoint ({_first_line(error)})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(f"{key}: not a Lightning checkpoint (no state_dict)")
    return checkpoint


def _differing_keys(
    recorded: dict[str, Any], current: dict[str, Any], prefixes: tuple[str, ...]
) -> list[str]:
    keys = sorted(k for k in set(recorded) | set(current) if k.startswith(prefixes))
    return [
        f"{k}={recorded.get(k, '<unset>')!r} in the checkpoint, {current.get(k, '<unset>')!r} now"
        for k in keys
        if recorded.get(k) != current.get(k)
    ]


def check_architecture(key: str, checkpoint: dict[str, Any], module: torch.nn.Module, hparams: dict) -> None:
    saved = checkpoint["state_dict"]
    own = module.state_dict()
    missing = [name for name in own if name not in saved]
    unexpected = [name for name in saved if name not in own]
    shapes = [
        f"{name} {tuple(saved[name].shape)} vs {tuple(own[name].shape)}"
        for name in own
        if name in saved and hasattr(saved[name], "shape") and saved[name].shape != own[name].shape
    ]
    if not (missing or unexpected or shapes):
        return
    differing = _differing_keys(checkpoint.get("hyper_parameters") or {}, hparams, ("model.", "task."))
    if differing:
        detail = "; ".join(differing)
    else:
        detail = "; ".join(
            shapes[:2] + [f"missing {n}" for n in missing[:2]] + [f"unexpected {n}" for n in unexpected[:2]]
        )
    raise ConfigError(
        f"{key}: written for another model ({detail}); resume with the same model and task keys"
    )


def check_optimizer(
    key: str, checkpoint: dict[str, Any], optimizer: torch.optim.Optimizer, hparams: dict
) -> None:
    states = checkpoint.get("optimizer_states")
    if not states:
        raise ConfigError(
            f"{key}: has no optimizer state (saved with save_weights_only?); it cannot resume a run"
        )
    recorded = (checkpoint.get("hyper_parameters") or {}).get("optim.target")
    current = hparams.get("optim.target")
    if recorded is not None and current is not None and recorded != current:
        raise ConfigError(
            f"{key}: written with optim._target_={recorded}, the config has {current}; resume with the "
            "same optimizer (the optimizer state is its own: moments, momentum buffers)"
        )
    groups = states[0].get("param_groups") if isinstance(states[0], dict) else None
    if not groups:
        raise ConfigError(f"{key}: truncated or corrupted checkpoint (no optimizer param_groups)")
    absent = sorted(set(optimizer.defaults) - set(groups[0]))
    if absent:
        raise ConfigError(
            f"{key}: its optimizer state lacks {', '.join(absent)} of {type(optimizer).__name__}: written "
            "with another optimizer; resume with the same optim"
        )


def check_checkpoint(path: str | Path, module: torch.nn.Module, hparams: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` unless ``path`` can resume ``module`` (built from the config).

    ``hparams``: the config flattened as the checkpoint records it
    (:func:`rnnflow.runtime.build.flat_hparams`). Call before ``trainer.fit(ckpt_path=...)``.
    """
    key = f"ckpt_path={str(path)!r}"
    checkpoint = load_checkpoint(path)
    check_architecture(key, checkpoint, module, hparams)
    optimizer = module.configure_optimizers()
    if isinstance(optimizer, (list, tuple)):
        optimizer = optimizer[0]
    if isinstance(optimizer, dict):
        optimizer = optimizer["optimizer"]
    check_optimizer(key, checkpoint, optimizer, hparams)
