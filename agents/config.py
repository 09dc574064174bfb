"""Config dataclasses: building one from a dict plus overrides, and validating every field.

:func:`check_types` holds one rule for every config: a field annotated ``int`` takes an
integer (not a bool), ``float`` a finite real number (not a bool, not inf or NaN), ``bool``
a bool, ``str`` a string, ``X | None`` also None. An algorithm's ``__post_init__`` calls it
and then states its ranges with :func:`require`, so a bad value always fails at
construction with a message that names it and what would be valid.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, fields, is_dataclass
from typing import Any

import numpy as np

from lm_gym import error

__all__ = ["check_types", "make_config", "require"]


def require(config: Any, name: str, ok: bool, valid: str) -> None:
    """Raise ``InvalidArgument("<name>=<value> is invalid: <valid>")`` unless ``ok``."""
    if not ok:
        raise error.InvalidArgument(f"{name}={getattr(config, name)!r} is invalid: {valid}")


def _allowed(tp: Any) -> tuple[set[Any], bool]:
    """The base types an annotation allows, and whether it allows None."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        bases = {typing.get_origin(a) or a for a in args if a is not type(None)}
        return bases, type(None) in args
    return {origin or tp}, False


def _coerce(name: str, value: Any, bases: set[Any]) -> Any:
    """``value`` checked against ``bases`` (numpy scalars become Python ones)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        if bool in bases:
            return value
        raise TypeError("a bool")
    if int in bases and isinstance(value, int):
        return value
    if float in bases and isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise TypeError("not finite")
        return value
    for base in bases - {int, float, bool}:
        if base is Any or (isinstance(base, type) and isinstance(value, base)):
            return value
        if base is dict and isinstance(value, Mapping):
            return dict(value)
    raise TypeError(type(value).__name__)


def check_types(config: Any) -> None:
    """Check (and normalise) every field of a config dataclass against its annotation."""
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        bases, optional = _allowed(hints[f.name])
        if value is None:
            if optional:
                continue
            raise error.InvalidArgument(f"{f.name}=None is invalid: use {_describe(bases)}")
        try:
            setattr(config, f.name, _coerce(f.name, value, bases))
        except TypeError:
            none = " or None" if optional else ""
            raise error.InvalidArgument(
                f"{f.name}={value!r} is invalid: use {_describe(bases)}{none}"
            ) from None


def _describe(bases: set[Any]) -> str:
    if float in bases:
        return "a finite number"
    if int in bases:
        return "an integer"
    if bool in bases:
        return "True or False"
    if str in bases:
        return "a string"
    if dict in bases:
        return "a dict"
    return " or ".join(sorted(getattr(b, "__name__", str(b)) for b in bases))


def make_config(cls: type, config: Any, overrides: Mapping[str, Any]) -> Any:
    """``cls`` from a config object or dict plus keyword overrides; unknown names are an error
    that lists the valid ones."""
    if config is None:
        base: dict[str, Any] = {}
    elif is_dataclass(config) and not isinstance(config, type):
        base = asdict(config)
    elif isinstance(config, Mapping):
        base = dict(config)
    else:
        raise error.InvalidArgument(f"config must be a {cls.__name__}, a dict or None, got {config!r}")
    merged = {**base, **overrides}
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(merged) - set(names))
    if unknown:
        hints = [error.did_you_mean(u, names) for u in unknown]
        hint = next((h for h in hints if h), "")
        raise error.InvalidArgument(
            f"unknown {cls.__name__} field(s) {unknown}{hint}; valid: {sorted(names)}"
        )
    return cls(**merged)
