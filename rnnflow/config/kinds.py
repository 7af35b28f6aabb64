"""The kinds of value a config key accepts, and the one-line error every refusal raises.

A kind is a small frozen object with ``accepts(value) -> bool`` and ``expected`` (the words
that complete ``"<key>=<value>: expected ..."``). Every number must be finite: ``inf`` and
``nan`` are refused wherever a number is accepted, because no rnnflow setting means anything
at an infinite or undefined value (an infinite learning rate or init scale gives non-finite
weights at the first step, an infinite clip threshold is ``null``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from omegaconf import ListConfig


class ConfigError(ValueError):
    """A config value that rnnflow cannot run with; the message is one line naming the key."""


def refuse(key: str, value: Any, expected: str) -> ConfigError:
    """``ConfigError("<key>=<value>: expected <expected>")``."""
    return ConfigError(f"{key}={_show(value)}: expected {expected}")


def _show(value: Any) -> str:
    if isinstance(value, ListConfig):
        value = list(value)
    return repr(value)


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate spelled most like ``name`` (difflib ratio >= 0.6), or None."""
    found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_key(key: str, value: Any, candidates: Iterable[str], where: str) -> ConfigError:
    """A key that ``where`` does not have: name the closest valid key, else list them."""
    candidates = sorted(set(candidates))
    guess = closest(key, candidates)
    parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
    if guess is None:
        guess = closest(key.rsplit(".", 1)[-1], [c.rsplit(".", 1)[-1] for c in candidates])
        guess = parent + guess if guess is not None else None
    hint = f"did you mean {guess}?" if guess else "expected one of " + ", ".join(candidates)
    shown = f"{key}={_show(value)}" if value is not _MISSING else key
    return ConfigError(f"{shown}: no such key in {where}; {hint}")


_MISSING = object()
MISSING = _MISSING  # ``unknown_key(..., value=MISSING)``: the message names the key only


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Kind(Protocol):
    expected: str

    def accepts(self, value: Any) -> bool: ...


@dataclass(frozen=True)
class Integer:
    """An ``int`` (not a bool, not a float) in ``[minimum, maximum]``."""

    minimum: int | None = None
    maximum: int | None = None

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, int) or isinstance(value, bool):
            return False
        return (self.minimum is None or value >= self.minimum) and (
            self.maximum is None or value <= self.maximum
        )

    @property
    def expected(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"an integer in [{self.minimum}, {self.maximum}]"
        if self.minimum is not None:
            return f"an integer >= {self.minimum}"
        return "an integer"


@dataclass(frozen=True)
class Real:
    """A finite number (int or float, not a bool) above ``low`` and below ``high``.

    ``low_open``/``high_open``: the bound itself is excluded.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def accepts(self, value: Any) -> bool:
        if not is_number(value) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    @property
    def expected(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"a finite number in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"a finite number {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"a finite number {'<' if self.high_open else '<='} {_num(self.high)}"
        return "a finite number"


def _num(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


@dataclass(frozen=True)
class Choice:
    """One of ``values`` (compared with ``==`` and the same type: ``1`` is not ``True``)."""

    values: tuple[Any, ...]

    def accepts(self, value: Any) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)

    @property
    def expected(self) -> str:
        return "one of " + ", ".join(_plain(v) for v in self.values)


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class Flag:
    """``true`` or ``false`` (YAML booleans; ``1``, ``"yes"`` and ``"banana"`` are refused)."""

    expected: str = "true or false"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True)
class Text:
    """Any non-empty string."""

    expected: str = "a non-empty string"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value)


@dataclass(frozen=True)
class Null:
    """Only ``null`` (a key whose value rnnflow fixes; ``expected`` says why)."""

    expected: str = "null"

    def accepts(self, value: Any) -> bool:
        return value is None


@dataclass(frozen=True)
class Pair:
    """A list of exactly ``len(items)`` values, item ``i`` of kind ``items[i]``."""

    items: tuple[Kind, ...]

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, (list, tuple, ListConfig)) or len(value) != len(self.items):
            return False
        return all(kind.accepts(item) for kind, item in zip(self.items, value, strict=True))

    @property
    def expected(self) -> str:
        if len(set(self.items)) == 1:
            return f"a list of {len(self.items)} values, each {self.items[0].expected}"
        return "a list [" + ", ".join(kind.expected for kind in self.items) + "]"


@dataclass(frozen=True)
class AnyOf:
    """A value any of ``kinds`` accepts (``text``: the words for it, else each kind's joined by "or")."""

    kinds: tuple[Kind, ...]
    text: str | None = None

    def accepts(self, value: Any) -> bool:
        return any(kind.accepts(value) for kind in self.kinds)

    @property
    def expected(self) -> str:
        return self.text or " or ".join(kind.expected for kind in self.kinds)


@dataclass(frozen=True)
class Devices:
    """Lightning's ``devices``: an integer >= 1, -1 (all), ``"auto"``, ``"0,1"``, or a list of indices."""

    expected: str = 'an integer >= 1, -1 (all), "auto", or GPU indices ("0,1" or [0, 1])'

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if isinstance(value, int):
            return value >= 1 or value == -1
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",")]
            if value.strip() in ("auto", "-1"):
                return True
            return (
                all(part.isdigit() for part in parts if part)
                and any(parts)
                and (len(parts) > 1 or int(parts[0]) >= 1)
            )
        if isinstance(value, (list, tuple, ListConfig)):
            return len(value) > 0 and all(Integer(0).accepts(item) for item in value)
        return False


def check(key: str, value: Any, kind: Kind, nullable: bool = False) -> None:
    """Raise :func:`refuse` unless ``value`` is of ``kind`` (or None where ``nullable``)."""
    if value is None and nullable:
        return
    if not kind.accepts(value):
        raise refuse(key, value, kind.expected + (" or null" if nullable else ""))


def finite_numbers(key: str, value: Any) -> None:
    """Refuse ``inf``/``nan`` anywhere in ``value`` (a number, or a list of them)."""
    if is_number(value) and not math.isfinite(value):
        raise refuse(key, value, "a finite number")
    if isinstance(value, (list, tuple, ListConfig)) and not isinstance(value, str):
        for item in value:
            if is_number(item) and not math.isfinite(item):
                raise refuse(key, value, "finite numbers")


__all__: Sequence[str] = (
    "AnyOf",
    "Choice",
    "ConfigError",
    "Devices",
    "Flag",
    "Integer",
    "Kind",
    "MISSING",
    "Null",
    "Pair",
    "Real",
    "Text",
    "check",
    "closest",
    "finite_numbers",
    "refuse",
    "unknown_key",
)
