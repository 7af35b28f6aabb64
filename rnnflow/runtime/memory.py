"""How much memory one training step needs, estimated before anything is allocated.

A run whose step cannot fit (``task.batch_size=10000000``, ``model.num_layers=1000`` on a small
machine) would otherwise allocate for a long time and then fail or be killed. With ``B`` the batch,
``T`` the input length (``task.total_len``), ``F`` the encoded input width, ``H`` the hidden size,
``L`` the layers, ``g`` the gates (rnn 1, gru 3, lstm 4) and ``P`` the parameters, a step keeps

    activations  ≈ B·T·(L·(4g + 4)·H + 2F) values
    weights      ≈ P·(2 + s) values          (weights, gradients, s optimizer states per weight)

``(4g + 4)·H`` per layer and time step is what was measured (peak resident memory of a step, CPU,
float32, T = 50, H = 64, B = 4096, probe step included): lstm 20.6·H, gru 19·H, rnn 7·H. The fused
forward keeps the gate pre-activations and states for the backward (g·H + 2H), the backward makes
as much again, and a gradient-flow probe step adds the extra input of g·H and its gradient. Values
are 4 bytes (mixed precision keeps float32 master weights and states, so the estimate stays).

:func:`check_memory` refuses a step that does not fit in the memory the machine has available now
(Linux ``MemAvailable``; a GPU's free memory for ``trainer.accelerator=gpu``), naming both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from rnnflow.config import ConfigError
from rnnflow.tasks import SyntheticTask

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
BYTES_PER_VALUE = 4
GIB = 2**30


@dataclass(frozen=True)
class StepMemory:
    """An estimate of one training step's memory, in bytes."""

    activations: int
    weights: int

    @property
    def total(self) -> int:
        return self.activations + self.weights


def parameter_count(
    cell: str, input_size: int, hidden: int, layers: int, output: int, layer_norm: bool
) -> int:
    """Parameters of :class:`rnnflow.models.RecurrentNet`: per layer ``g·H·(in + H) + 2·g·H``, + head."""
    gates = GATES[cell]
    total = 0
    for index in range(layers):
        size_in = input_size if index == 0 else hidden
        total += gates * hidden * (size_in + hidden) + 2 * gates * hidden + (2 * hidden if layer_norm else 0)
    return total + hidden * output + output


def optimizer_states(cfg: DictConfig) -> int:
    """Optimizer values kept per weight: Adam-like 2, SGD/RMSprop 1 (+1 momentum, +1 centered)."""
    target = str(OmegaConf.select(cfg, "optim._target_", default="")).rsplit(".", 1)[-1]
    momentum = OmegaConf.select(cfg, "optim.momentum", default=0) or 0
    if target == "SGD":
        return 1 if momentum else 0
    if target == "RMSprop":
        return (
            1 + (1 if momentum else 0) + (1 if OmegaConf.select(cfg, "optim.centered", default=False) else 0)
        )
    return 2


def estimate_step_memory(cfg: DictConfig, task: SyntheticTask) -> StepMemory:
    """The estimate of the module docstring for the config ``cfg`` on ``task``."""
    cell = cfg.model.cell
    hidden, layers, batch = cfg.model.hidden_size, cfg.model.num_layers, cfg.task.batch_size
    width = task.input_size  # after one-hot encoding of tokens
    per_step = layers * (4 * GATES[cell] + 4) * hidden + 2 * width
    activations = batch * task.total_len * per_step
    params = parameter_count(
        cell, width, hidden, layers, task.output_size, bool(cfg.model.get("layer_norm", False))
    )
    weights = params * (2 + optimizer_states(cfg))
    return StepMemory(activations * BYTES_PER_VALUE, weights * BYTES_PER_VALUE)


def available_memory(cfg: DictConfig) -> tuple[int, int, str] | None:
    """``(available, total, where)`` in bytes for the device a step runs on, or None if unknown."""
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default="cpu")
    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info(0)
        return free, total, f"GPU 0 ({torch.cuda.get_device_name(0)})"
    try:
        with open("/proc/meminfo") as handle:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle if ":" in line}
        return fields["MemAvailable"], fields["MemTotal"], "this machine"
    except (OSError, KeyError, ValueError, IndexError):
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        total = pages * page_size
        return total, total, "this machine"


def _processes(cfg: DictConfig) -> int:
    """Training processes sharing the host's memory: CPU ddp runs ``devices`` of them."""
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default="cpu")
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    if accelerator == "cpu" and isinstance(devices, int) and devices > 1:
        return devices
    return 1


def check_memory(
    cfg: DictConfig, task: SyntheticTask, available: tuple[int, int, str] | None = None
) -> StepMemory:
    """Raise :class:`ConfigError` if a step of ``cfg`` needs more memory than is available; the estimate.

    ``available``: ``(available, total, where)`` in bytes (default :func:`available_memory`).
    """
    estimate = estimate_step_memory(cfg, task)
    available = available if available is not None else available_memory(cfg)
    if available is None:
        return estimate
    free, total, where = available
    needed = estimate.total * _processes(cfg)
    if needed > free:
        sizes = (
            f"task.batch_size={cfg.task.batch_size}, T={task.total_len}, "
            f"model.hidden_size={cfg.model.hidden_size}, model.num_layers={cfg.model.num_layers}"
        )
        raise ConfigError(
            f"{sizes}: one training step needs about {_gib(needed)} (activations "
            f"{_gib(estimate.activations)}, weights and optimizer {_gib(estimate.weights)}), "
            f"{where} has {_gib(free)} available of "
            f"{_gib(total)}; expected a smaller task.batch_size, task.seq_len, model.hidden_size or "
            "model.num_layers"
        )
    return estimate


def _gib(size: float) -> str:
    gib = size / GIB
    if gib >= 1024:
        return f"{gib / 1024:.1f} TiB"
    return f"{gib:.1f} GiB" if gib >= 0.1 else f"{size / 2**20:.1f} MiB"


__all__ = ["StepMemory", "check_memory", "estimate_step_memory", "parameter_count"]
