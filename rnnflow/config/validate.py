"""Check a composed config against :mod:`rnnflow.config.schema`, before anything is built.

Hydra rejects unknown config groups (``model=transformer``) and keys that are changed without
``+`` while composing; :mod:`rnnflow.config.command_line` turns the latter into the closest valid
key. This module checks what composition lets through:

* every key is known: a key added with ``+`` that rnnflow does not read (``+modle=gru``,
  ``+model.nonlinearity=relu`` with ``model=lstm``, ``+optim.momentum=0.9`` with Adam) is refused
  with the closest valid key rather than silently ignored;
* every value is of its declared kind (range, choice, boolean, finite number);
* the rules between keys (:data:`RULES`);
* the optimizer is built once on a dummy parameter, so that torch's own checks run now.

Lightning's ``trainer.gradient_clip_val``/``gradient_clip_algorithm`` are honoured (Lightning clips,
:class:`rnnflow.callbacks.clipping.ClipMonitor` logs ``clip/*``) where Lightning clips; together with
``clip.max_norm`` or under truncated BPTT they are refused naming ``clip.max_norm``. Every refusal
is a :class:`ConfigError` whose message is one line naming the key, the value given and what is
accepted.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnflow.config.kinds import ConfigError, check, finite_numbers, refuse, unknown_key
from rnnflow.config.schema import (
    BY_PATH,
    CLOSED_GROUPS,
    INSTANTIATED_GROUPS,
    KEYS,
    MIXED_PRECISIONS,
    OPTIMIZER_ARGS,
)
from rnnflow.tasks import build_task, task_parameters

_ABSENT = object()
TASK_SHARED = ("name", "seq_len", "batch_size", "val_batches")
# Arguments of the Trainer that rnnflow fills in from other groups.
TRAINER_SET_BY_RNNFLOW = {"logger": "the logger group", "callbacks": "the callbacks group"}


def get(cfg: DictConfig, path: str, default: Any = None) -> Any:
    """The resolved value at ``path`` (``default`` if absent); an unresolvable value is a ConfigError."""
    try:
        return OmegaConf.select(cfg, path, default=default, throw_on_missing=True)
    except OmegaConfBaseException as error:
        raise ConfigError(f"{path}: {str(error).splitlines()[0]}") from None


def _leaves(node: Any, prefix: str) -> Iterator[str]:
    """Dotted paths of the leaves of ``node`` (a DictConfig), not resolving interpolations."""
    for key in node:
        path = f"{prefix}.{key}"
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_interpolation():
            yield from _leaves(child, path)
        else:
            yield path


def _check_known_keys(cfg: DictConfig) -> None:
    """Refuse keys that the schema does not declare (those of the open groups are checked later)."""
    top = {key.path.split(".", 1)[0] for key in KEYS} | {"task", "optim", *INSTANTIATED_GROUPS}
    for key in cfg:
        if key not in top:
            raise unknown_key(str(key), get(cfg, str(key)), top, "the config")
    for group in CLOSED_GROUPS:
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        declared = [path for path in BY_PATH if path.startswith(group + ".")]
        for path in _leaves(node, group):
            if path not in BY_PATH:
                raise unknown_key(path, get(cfg, path), declared, _where(cfg, group))


def _where(cfg: DictConfig, group: str) -> str:
    if group == "model":
        return f"model.cell={get(cfg, 'model.cell')}"
    return group


def _check_declared(cfg: DictConfig) -> None:
    for key in KEYS:
        value = get(cfg, key.path, _ABSENT)
        if key.path.startswith("trainer.") and value is _ABSENT:
            continue  # Lightning's default applies
        if key.only is not None:
            other, values = key.only
            actual = get(cfg, other)
            if actual not in values:
                if value is not _ABSENT and value is not None:
                    raise refuse(
                        key.path,
                        value,
                        f"null unless {other}={'|'.join(values)} ({other}={actual} has no such setting)",
                    )
                continue
        check(key.path, None if value is _ABSENT else value, key.kind, key.nullable)


def _check_task(cfg: DictConfig) -> None:
    """The task's own keys are the parameters of its class; the class checks their values."""
    name = get(cfg, "task.name")
    accepted = [*TASK_SHARED, *task_parameters(name)]
    params = {}
    for key in cfg.task:
        value = get(cfg, f"task.{key}")
        if key not in accepted:
            raise unknown_key(f"task.{key}", value, [f"task.{k}" for k in accepted], f"task={name}")
        finite_numbers(f"task.{key}", value)
        if key not in TASK_SHARED:
            params[key] = value
    try:
        build_task(name, seq_len=get(cfg, "task.seq_len"), **params)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _parameters(target: Any) -> tuple[list[str], bool]:
    """The keyword parameters of ``target`` (a class or function) and whether it takes ``**kwargs``."""
    function = target.__init__ if inspect.isclass(target) else target
    parameters = inspect.signature(function).parameters.values()
    names = [p.name for p in parameters if p.name != "self" and p.kind is not p.VAR_KEYWORD]
    return names, any(p.kind is p.VAR_KEYWORD for p in parameters)


def _import_target(path: str, node: DictConfig) -> Any:
    target = get(node, "_target_")
    try:
        return get_class(target)
    except Exception:  # noqa: BLE001 - hydra raises ImportError, ValueError, ... for a bad path
        try:
            from hydra.utils import get_method

            return get_method(target)
        except Exception:  # noqa: BLE001
            raise refuse(f"{path}._target_", target, "an importable class (module.Class)") from None


def _check_optimizer(cfg: DictConfig) -> None:
    node = cfg.optim
    target = _import_target("optim", node)
    if not (inspect.isclass(target) and issubclass(target, torch.optim.Optimizer)):
        raise refuse("optim._target_", get(cfg, "optim._target_"), "a torch.optim.Optimizer class")
    check("optim._partial_", get(cfg, "optim._partial_"), _TRUE)
    names, _ = _parameters(target)
    names = [name for name in names if name != "params"]
    where = f"optim ({target.__module__}.{target.__name__})"
    for key in node:
        if str(key).startswith("_"):
            continue
        path, value = f"optim.{key}", get(cfg, f"optim.{key}")
        if key not in names and key in OPTIMIZER_ARGS:  # another optimizer's argument: no guess
            raise ConfigError(f"{path}={value!r}: not an argument of {where}; it takes {', '.join(names)}")
        if key not in names:
            raise unknown_key(path, value, [f"optim.{n}" for n in names], where)
        if key in OPTIMIZER_ARGS:
            kind, nullable = OPTIMIZER_ARGS[key]
            check(path, value, kind, nullable)
        else:
            finite_numbers(path, value)
    if get(cfg, "optim.nesterov", False):
        momentum, dampening = get(cfg, "optim.momentum", 0), get(cfg, "optim.dampening", 0)
        if not (momentum and momentum > 0) or dampening:
            raise ConfigError(
                f"optim.nesterov=True with optim.momentum={momentum!r}, optim.dampening={dampening!r}: "
                "expected optim.momentum > 0 and optim.dampening=0 (Nesterov momentum needs momentum)"
            )
    try:  # torch's own checks of the arguments, on a throw-away parameter
        instantiate(node)([torch.nn.Parameter(torch.zeros(1))])
    except (InstantiationException, ValueError, TypeError, RuntimeError) as error:
        cause = error.__cause__ or error
        raise ConfigError(f"{where}: {str(cause).splitlines()[0]}") from None


class _TrueOnly:
    expected = "true (the optimizer is built later, on the model's parameters)"

    def accepts(self, value: Any) -> bool:
        return value is True


_TRUE = _TrueOnly()


def _check_trainer(cfg: DictConfig) -> None:
    import lightning as L

    names, _ = _parameters(L.Trainer)
    declared = [path for path in BY_PATH if path.startswith("trainer.")]
    for key in cfg.trainer:
        path, value = f"trainer.{key}", get(cfg, f"trainer.{key}")
        if key in TRAINER_SET_BY_RNNFLOW:
            raise ConfigError(f"{path}: set by rnnflow from {TRAINER_SET_BY_RNNFLOW[key]}; remove it")
        if path not in BY_PATH and key not in names:
            raise unknown_key(path, value, declared + [f"trainer.{n}" for n in names], "lightning's Trainer")
        finite_numbers(path, value)


def _check_instantiated(cfg: DictConfig) -> None:
    """``callbacks.*``/``logger.*``: null (off) or a ``_target_`` node whose keys the target takes."""
    for group in INSTANTIATED_GROUPS:
        nodes = cfg.get(group)
        if nodes is None:
            continue
        for name in nodes:
            node = nodes.get(name)
            path = f"{group}.{name}"
            if node is None:
                continue
            if not isinstance(node, DictConfig) or "_target_" not in node:
                raise refuse(path, get(cfg, path), "null or a node with a _target_")
            names, takes_any = _parameters(_import_target(path, node))
            for key in node:
                if str(key).startswith("_") or takes_any:
                    continue
                if key not in names:
                    raise unknown_key(
                        f"{path}.{key}", get(cfg, f"{path}.{key}"), [f"{path}.{n}" for n in names], path
                    )


# ----------------------------------------------------------------------------------- rules


def _rule_spectral_radius(cfg: DictConfig) -> None:
    if get(cfg, "model.init.spectral_radius") is not None and get(cfg, "model.init.recurrent") == "zeros":
        raise refuse(
            "model.init.spectral_radius",
            get(cfg, "model.init.spectral_radius"),
            "null when model.init.recurrent=zeros (a zero matrix has no radius to rescale)",
        )


def _rule_probe_route(cfg: DictConfig) -> None:
    """The adjoint route runs in the weights' dtype: refuse it where mixed precision would change that."""
    if get(cfg, "diagnostics.probe_route") != "adjoint":
        return
    precision = get(cfg, "trainer.precision", "32-true")
    if precision in MIXED_PRECISIONS:
        raise refuse(
            "diagnostics.probe_route",
            "adjoint",
            f"auto or extra_input with trainer.precision={precision} (the adjoint backward runs in "
            "the weights' dtype; mixed precision keeps the fused backward)",
        )


def _rule_clipping(cfg: DictConfig) -> None:
    """Lightning's ``trainer.gradient_clip_val`` is honoured (Lightning clips, ClipMonitor logs clip/*)
    where Lightning clips: not together with ``clip.max_norm`` (twice), not under truncated BPTT."""
    value = get(cfg, "trainer.gradient_clip_val")
    if not value:
        return
    max_norm = get(cfg, "clip.max_norm")
    if max_norm is not None:
        raise ConfigError(
            f"trainer.gradient_clip_val={value!r} and clip.max_norm={max_norm!r}: expected only "
            "clip.max_norm (with clip.algorithm); both would clip twice"
        )
    chunk = get(cfg, "tbptt.chunk")
    if chunk is not None:
        raise ConfigError(
            f"trainer.gradient_clip_val={value!r} with tbptt.chunk={chunk}: expected clip.max_norm={value!r} "
            "instead (truncated BPTT steps the optimizer itself, where Lightning does not clip)"
        )


def _rule_chrono(cfg: DictConfig) -> None:
    if get(cfg, "model.cell") != "lstm" or get(cfg, "model.init.forget_bias") != "chrono":
        return
    if get(cfg, "model.init.chrono_max") is None and get(cfg, "task.seq_len") <= 2:
        raise refuse(
            "task.seq_len",
            get(cfg, "task.seq_len"),
            "> 2 for forget_bias=chrono (T_max = task.seq_len), or set model.init.chrono_max",
        )


def _rule_lyapunov_count(cfg: DictConfig) -> None:
    hidden = get(cfg, "model.hidden_size")
    states = 2 * hidden if get(cfg, "model.cell") == "lstm" else hidden
    if get(cfg, "diagnostics.lyapunov_count") > states:
        raise refuse(
            "diagnostics.lyapunov_count",
            get(cfg, "diagnostics.lyapunov_count"),
            f"at most the state dimension {states} (hidden_size, 2·hidden_size for the LSTM's (h, c))",
        )


RULES: tuple[Callable[[DictConfig], None], ...] = (
    _rule_spectral_radius,
    _rule_probe_route,
    _rule_clipping,
    _rule_chrono,
    _rule_lyapunov_count,
)


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` on the first invalid key or value of ``cfg`` (which is not changed)."""
    _check_known_keys(cfg)
    _check_declared(cfg)
    _check_task(cfg)
    _check_optimizer(cfg)
    _check_trainer(cfg)
    _check_instantiated(cfg)
    for rule in RULES:
        rule(cfg)
