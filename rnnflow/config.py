"""Validation of a composed experiment config, before anything is built or trained.

Hydra already rejects unknown config groups (``model=transformer``: it lists the
available options) and unknown keys (struct mode). This module checks the *values*
of the keys and raises :class:`ConfigError` with a one-line message that names the
offending key, the value given and what is accepted, e.g.::

    model.hidden_size=0: expected an integer >= 1
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnflow.models import BIAS_SCHEMES, FORGET_BIAS_SCHEMES, INPUT_SCHEMES, NONLINEARITIES, RECURRENT_SCHEMES
from rnnflow.probes.gradient_flow import PROBE_ROUTES
from rnnflow.tasks import TASKS, build_task

CELL_NAMES = ("rnn", "lstm", "gru")
CLIP_ALGORITHMS = ("norm", "value")
NONFINITE_POLICIES = ("skip", "stop", "raise")


class ConfigError(ValueError):
    """A config value that rnnflow cannot run with; the message names the key."""


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None, throw_on_missing=True)


class _Checker:
    """Collects the checks; raises on the first failure so the message stays one line."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def _fail(self, key: str, value: Any, expected: str) -> None:
        raise ConfigError(f"{key}={value!r}: expected {expected}")

    def integer(self, key: str, minimum: int, optional: bool = False) -> None:
        value = _get(self.cfg, key)
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self._fail(key, value, f"an integer >= {minimum}" + (" or null" if optional else ""))

    def positive(self, key: str, optional: bool = False) -> None:
        value = _get(self.cfg, key)
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            self._fail(key, value, "a number > 0" + (" or null" if optional else ""))

    def number(self, key: str, optional: bool = False) -> None:
        value = _get(self.cfg, key)
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self._fail(key, value, "a number" + (" or null" if optional else ""))

    def choice(self, key: str, accepted: Iterable[str]) -> None:
        value = _get(self.cfg, key)
        accepted = tuple(accepted)
        if value not in accepted:
            self._fail(key, value, "one of " + ", ".join(accepted))

    def flag(self, key: str) -> None:
        value = _get(self.cfg, key)
        if not isinstance(value, bool):
            self._fail(key, value, "true or false")

    def rule(self, ok: bool, key: str, expected: str) -> None:
        if not ok:
            self._fail(key, _get(self.cfg, key), expected)

    def has(self, key: str) -> bool:
        return OmegaConf.select(self.cfg, key, default=None) is not None


def _check_model(c: _Checker) -> None:
    c.choice("model.cell", CELL_NAMES)
    c.integer("model.hidden_size", 1)
    c.integer("model.num_layers", 1)
    cell = _get(c.cfg, "model.cell")
    if cell == "rnn":
        c.choice("model.nonlinearity", NONLINEARITIES)
    c.choice("model.init.recurrent", RECURRENT_SCHEMES)
    c.choice("model.init.input", INPUT_SCHEMES)
    c.choice("model.init.bias", BIAS_SCHEMES)
    c.positive("model.init.std", optional=True)
    c.positive("model.init.spectral_radius", optional=True)
    if c.has("model.init.spectral_radius"):
        c.rule(
            _get(c.cfg, "model.init.recurrent") != "zeros",
            "model.init.spectral_radius",
            "null when model.init.recurrent=zeros (a zero matrix has no radius to rescale)",
        )
    forget_bias = _get(c.cfg, "model.init.forget_bias")
    if forget_bias not in FORGET_BIAS_SCHEMES:
        c.rule(
            forget_bias is None
            or (isinstance(forget_bias, (int, float)) and not isinstance(forget_bias, bool)),
            "model.init.forget_bias",
            "a number, " + ", ".join(FORGET_BIAS_SCHEMES) + " or null",
        )
    chrono_max = _get(c.cfg, "model.init.chrono_max")
    c.rule(
        chrono_max is None
        or (isinstance(chrono_max, (int, float)) and not isinstance(chrono_max, bool) and chrono_max > 2),
        "model.init.chrono_max",
        "a number > 2 (T_max of chrono init) or null (= task.seq_len)",
    )
    if forget_bias == "chrono" and chrono_max is None:
        c.rule(
            _get(c.cfg, "task.seq_len") > 2,
            "task.seq_len",
            "> 2 for forget_bias=chrono, or set model.init.chrono_max",
        )
    if cell != "lstm":
        c.rule(not c.has("model.init.forget_bias"), "model.init.forget_bias", "null unless model.cell=lstm")


def _check_task(c: _Checker) -> None:
    """``task.*``: the name, the shared sizes, then the task's own keys and their consistency.

    The task class checks its own parameters (``rnnflow.tasks``; e.g. ``task.variant``, ``task.bits``,
    ``task.n_copy <= task.seq_len``) with messages in the same one-line form, naming the key.
    """
    c.choice("task.name", sorted(TASKS))
    c.integer("task.seq_len", 1)
    c.integer("task.batch_size", 1)
    c.integer("task.val_batches", 1)
    params = OmegaConf.to_container(c.cfg.task, resolve=True)
    name = params.pop("name")
    for key in ("batch_size", "val_batches"):
        params.pop(key, None)
    try:
        build_task(name, **params)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _check_training(c: _Checker) -> None:
    c.positive("optim.lr")
    c.positive("clip.max_norm", optional=True)
    c.choice("clip.algorithm", CLIP_ALGORITHMS)
    c.integer("trainer.max_steps", 1)
    c.integer("trainer.val_check_interval", 1)
    c.integer("diagnostics.every_n_steps", 1, optional=True)
    c.integer("diagnostics.spectral_every_n_steps", 1, optional=True)
    c.integer("diagnostics.figure_every_n_steps", 1, optional=True)
    c.positive("diagnostics.horizon_factor")
    c.rule(_get(c.cfg, "diagnostics.horizon_factor") < 1, "diagnostics.horizon_factor", "a number in (0, 1)")
    c.choice("diagnostics.probe_route", PROBE_ROUTES)
    for instrument in ("activations", "gates", "lyapunov", "credit", "parameters", "verdict"):
        c.flag(f"diagnostics.{instrument}")
    c.positive("diagnostics.saturation_threshold")
    c.rule(
        _get(c.cfg, "diagnostics.saturation_threshold") < 1,
        "diagnostics.saturation_threshold",
        "a number in (0, 1)",
    )
    c.integer("diagnostics.lyapunov_count", 1)
    c.integer("diagnostics.lyapunov_sequences", 1)
    c.integer("diagnostics.lyapunov_qr_every", 1)
    c.integer("diagnostics.explain_sequences", 1, optional=True)
    hidden = _get(c.cfg, "model.hidden_size")
    states = 2 * hidden if _get(c.cfg, "model.cell") == "lstm" else hidden
    c.rule(
        _get(c.cfg, "diagnostics.lyapunov_count") <= states,
        "diagnostics.lyapunov_count",
        f"at most the state dimension {states} (hidden_size, 2·hidden_size for the LSTM's (h, c))",
    )
    c.integer("tbptt.chunk", 1, optional=True)
    c.choice("nonfinite.policy", NONFINITE_POLICIES)
    c.integer("nonfinite.max_consecutive", 1)
    c.integer("seed", 0)
    c.flag("cpu_flush_denormal")
    c.flag("cpu_keep_freed_memory")


CHECKS: tuple[Callable[[_Checker], None], ...] = (_check_model, _check_task, _check_training)


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` on the first invalid value of ``cfg``."""
    checker = _Checker(cfg)
    for check in CHECKS:
        check(checker)
