"""Turn a composed Hydra config into the objects of a run: task, model, module, data, trainer."""

from __future__ import annotations

from typing import Any

import hydra
import lightning as L
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from rnnflow.config import ConfigError
from rnnflow.lit.data import SyntheticDataModule
from rnnflow.lit.module import RecurrentTaskModule
from rnnflow.models import RecurrentNet
from rnnflow.runtime.slurm import slurm_plugins
from rnnflow.tasks import SyntheticTask, build_task

TASK_BUILD_EXCLUDE = ("name", "batch_size", "val_batches")


def build_task_from_config(cfg: DictConfig) -> SyntheticTask:
    params = {
        k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items() if k not in TASK_BUILD_EXCLUDE
    }
    return build_task(cfg.task.name, **params)


def build_model(cfg: DictConfig, task: SyntheticTask) -> RecurrentNet:
    # Every key below has its one default in conf/model/<cell>.yaml (declared in rnnflow.config.schema);
    # ``model.nonlinearity`` exists for the vanilla RNN only.
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    init = model_cfg["init"]
    if init["forget_bias"] == "chrono" and init["chrono_max"] is None:
        init["chrono_max"] = cfg.task.seq_len  # chrono's T_max: the task's length by default
    options = {"nonlinearity": model_cfg["nonlinearity"]} if model_cfg["cell"] == "rnn" else {}
    return RecurrentNet(
        cell=model_cfg["cell"],
        input_size=task.input_size,
        hidden_size=model_cfg["hidden_size"],
        num_layers=model_cfg["num_layers"],
        output_size=task.output_size,
        readout=task.readout,
        vocab_size=task.vocab_size,
        residual=model_cfg["residual"],
        layer_norm=model_cfg["layer_norm"],
        init=init,
        **options,
    )


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The run's config flattened to ``{"model.hidden_size": 128, ...}`` with plain values."""
    flat: dict[str, Any] = {}

    def visit(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if str(key) == "_target_":  # e.g. optim._target_ -> optim.target
                    key = "target"
                elif str(key).startswith("_"):
                    continue
                visit(f"{prefix}.{key}" if prefix else str(key), value)
        elif isinstance(node, (list, tuple)):
            flat[prefix] = str(list(node))
        else:
            flat[prefix] = node if isinstance(node, (int, float, str, bool)) else str(node)

    keep = {k: cfg[k] for k in ("model", "task", "optim", "clip", "tbptt", "seed") if k in cfg}
    visit("", OmegaConf.to_container(OmegaConf.create(keep), resolve=True))
    flat["trainer.max_steps"] = cfg.trainer.max_steps
    return flat


def build_module(cfg: DictConfig, task: SyntheticTask) -> RecurrentTaskModule:
    return RecurrentTaskModule(
        model=build_model(cfg, task),
        task=task,
        optimizer=hydra.utils.instantiate(cfg.optim),
        tbptt_chunk=cfg.tbptt.chunk,
        hparams=flat_hparams(cfg),
    )


def build_datamodule(cfg: DictConfig, task: SyntheticTask) -> SyntheticDataModule:
    return SyntheticDataModule(task, cfg.task.batch_size, cfg.task.val_batches, cfg.seed)


def build_trainer(
    cfg: DictConfig, extra_callbacks: list[L.Callback] | None = None, plugins: list[Any] | None = None
) -> L.Trainer:
    """The Trainer of ``cfg.trainer`` with ``cfg.logger``, ``cfg.callbacks`` and ``plugins``.

    ``extra_callbacks`` run first (Lightning calls callbacks in list order; it moves checkpoint
    callbacks last).
    """
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    try:
        return hydra.utils.instantiate(
            cfg.trainer,
            callbacks=list(extra_callbacks or []) + callbacks,
            logger=loggers or False,
            # under SLURM: no mid-batch auto-requeue (rnnflow requeues)
            plugins=[*(plugins or []), *slurm_plugins()] or None,
            _convert_="partial",  # plain lists: Lightning 2.4 takes a ListConfig of plugins for one plugin
        )
    except InstantiationException as error:
        # A Trainer argument added with +trainer.<key> that Lightning refuses (rnnflow's schema declares
        # only the keys of conf/trainer; Lightning checks its other arguments): its message, one line.
        cause = error.__cause__ or error
        lines = str(cause).strip().splitlines() or [type(cause).__name__]
        raise ConfigError(f"trainer: {lines[0]}") from None
