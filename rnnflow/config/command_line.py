"""A mistyped key or option on the command line, named with its closest valid one before Hydra starts.

Hydra refuses ``task.seq_lenn=10`` (a key that the config does not have) with the advice to write
``+task.seq_lenn=10``, which only moves the typo into the config. Before ``@hydra.main`` runs,
:func:`check_command_line` composes the same overrides with Hydra's compose API; if composition
fails on a key that does not exist, it raises :class:`ConfigError` naming the closest key of the
config (or config group) instead; if it fails on a config group option that does not exist
(``model=transformer``), the error names the group's options in one line (Hydra's own message runs to
a dozen lines of search paths). Anything else is left to Hydra, which reports it as before.

In a sweep (``-m``) each choice sweep (``model=rnn,lstm``) is composed with its first value; range and
interval sweeps are left out. Hydra flags other than ``-m``/``--multirun`` (``--cfg``, ``--help``,
``-cp``, ...) skip the check.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf

from rnnflow.config.kinds import ConfigError, closest

_FAILED_KEY = re.compile(r"Could not override '([^']+)'")
_MISSING_OPTION = re.compile(r"Could not find '(.+)/([^'/]+)'")
_MULTIRUN_FLAGS = ("-m", "--multirun")


def _overrides(argv: Sequence[str]) -> list[str] | None:
    """The overrides of ``argv``, or None when a Hydra flag other than ``-m`` is present."""
    overrides = []
    for arg in argv:
        if arg in _MULTIRUN_FLAGS:
            continue
        if arg.startswith("-"):
            return None
        overrides.append(arg)
    return overrides


def _single_run(parsed: list[Override]) -> list[str]:
    """The overrides of one job: a choice sweep becomes its first value; other sweeps are dropped."""
    kept = []
    for override in parsed:
        if not override.is_sweep_override():
            kept.append(override.input_line)
        elif override.value_type in (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP):
            first = next(iter(override.sweep_string_iterator()))
            kept.append(f"{override.get_key_element()}={first}")
    return kept


def _keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in node:
        path = f"{prefix}{key}"
        keys.append(path)
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_interpolation():
            keys.extend(_keys(child, path + "."))
    return keys


def _groups(config_dir: Path) -> list[str]:
    return sorted(
        str(path.relative_to(config_dir))
        for path in config_dir.rglob("*")
        if path.is_dir() and "__" not in path.name
    )


def check_command_line(argv: Sequence[str], config_dir: str | Path, config_name: str) -> None:
    """Raise :class:`ConfigError` if an override of ``argv`` changes a key that the config lacks."""
    overrides = _overrides(argv)
    if not overrides:
        return
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return  # a syntax error: Hydra says where
    single = _single_run(parsed)
    config_dir = Path(config_dir).resolve()
    _check_group_options(parsed, config_dir)
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        try:
            compose(config_name, overrides=single)
            return
        except MissingConfigException as error:
            missing = _missing_option(error, parsed)
            if missing is None:
                return  # not a group option (e.g. a file an experiment names): Hydra reports it
            raise missing from None
        except HydraException as error:
            match = _FAILED_KEY.search(str(error))
            if match is None:
                return  # not a missing key: Hydra reports it
            key = match.group(1)
        failing = next(o for o in parsed if o.get_key_element().lstrip("+~") == key)
        if failing.type is not OverrideType.CHANGE:
            return
        others = [line for line in single if line.split("=", 1)[0] != key]
        try:
            cfg = compose(config_name, overrides=others)
        except HydraException:
            return
    raise _typo(key, failing, cfg, config_dir)


def _group_options(config_dir: Path, group: str) -> list[str] | None:
    """The options of a config group of ``config_dir`` (None: not one; Hydra's own groups, whose
    options also come from installed plugins, are left to Hydra)."""
    path = config_dir / group
    if group.split("/", 1)[0] == "hydra" or not path.is_dir():
        return None
    return sorted(p.stem for p in path.glob("*.yaml"))


def _check_group_options(parsed: list[Override], config_dir: Path) -> None:
    """Every value of ``group=option`` (each value of a sweep ``group=a,b``) is one of the group's options."""
    for override in parsed:
        group = override.get_key_element().lstrip("+~")
        options = _group_options(config_dir, group)
        if options is None or override.is_delete():
            continue
        if override.value_type in (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP):
            values = list(override.sweep_string_iterator())
        elif isinstance(override.value(), str):
            values = [override.value()]
        elif override.value() is None:  # Hydra stops on it with a ValueError traceback
            raise ConfigError(
                f"{group}=null: a config group takes one of its options ({group} has {', '.join(options)}); "
                f"to use none, leave {group} out"
            )
        else:
            continue  # a list of options: Hydra decides
        for value in values:
            if value not in options:
                raise _no_such_option(group, value, options)


def _no_such_option(group: str, value: str, options: list[str]) -> ConfigError:
    guess = closest(value, options)
    hint = f"; did you mean {group}={guess}?" if guess is not None else ""
    return ConfigError(f"{group}={value}: no such option; {group} has {', '.join(options)}{hint}")


def _missing_option(error: MissingConfigException, parsed: list[Override]) -> ConfigError | None:
    """``group=option`` of the command line where the group has no such option: one line with the
    group's options (None: the missing config is not an option typed on the command line)."""
    match = _MISSING_OPTION.search(str(error))
    if match is None or not error.options:
        return None
    group, option = match.groups()
    typed = next((o for o in parsed if o.get_key_element().lstrip("+~") == group), None)
    if typed is None:
        return None
    value = typed.input_line.split("=", 1)[1] if "=" in typed.input_line else option
    return _no_such_option(group, value, list(error.options))


def _typo(key: str, override: Override, cfg: DictConfig, config_dir: Path) -> ConfigError:
    value = override.input_line.split("=", 1)[1] if "=" in override.input_line else ""
    groups = _groups(config_dir)
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if parent == "trainer" and _is_trainer_argument(leaf):
        return ConfigError(
            f"{key}={value}: not set in conf/trainer; {leaf} is an argument of Lightning's Trainer, "
            f"add it with +{key}={value}"
        )
    if key in groups and not parent:  # a group of conf/ that this config's defaults list lacks
        users = sorted(
            f"experiment={path.stem}"
            for path in (config_dir / "experiment").glob("*.yaml")
            if f"/{key}:" in path.read_text()
        )
        used_by = f" ({', '.join(users)} uses it)" if users else ""
        return ConfigError(
            f"{key}={value}: the config group {key} is not in this config's defaults{used_by}; "
            f"add it with +{key}={value}"
        )
    siblings = [str(k) for k in node] if isinstance(node, DictConfig) else []
    if not parent:
        siblings += [group for group in groups if "/" not in group]
    guess = closest(leaf, siblings)
    if guess is not None:
        guess = f"{parent}.{guess}" if parent else guess
    else:  # elsewhere in the config (model.recurrent -> model.init.recurrent), not an ancestor
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in reversed(_keys(cfg))}
        found = closest(leaf, by_leaf)
        guess = by_leaf[found] if found is not None else None
    if guess is not None:
        return ConfigError(f"{key}={value}: no such key; did you mean {guess}?")
    if isinstance(node, DictConfig):
        where = parent or "the config"
        return ConfigError(f"{key}={value}: no such key; {where} has " + ", ".join(str(k) for k in node))
    return ConfigError(f"{key}={value}: no such key")


def _is_trainer_argument(name: str) -> bool:
    import inspect

    import lightning as L

    return name in inspect.signature(L.Trainer.__init__).parameters


# Hydra override values need quoting when they hold characters of its grammar (a sweep job's
# directory name holds '=' and ',').
_HYDRA_SPECIAL = set("=,[]{}()'\" ")


def shell_override(key: str, value: str) -> str:
    """``key=value`` as one shell word that Hydra parses back to ``value`` (quoted where needed)."""
    if any(char in _HYDRA_SPECIAL for char in value):
        value = "'" + value.replace("'", "\\'") + "'"
    return shlex.quote(f"{key}={value}")
