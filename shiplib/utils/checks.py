"""Checks of one option value, each with the one message its callers share: the name, what is allowed, the value."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..errors import ConfigError


def is_int(value) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def positive_int(name: str, value, allow_none: bool = False, allow_zero: bool = False):
    """`value` when it is an int >= 1 (>= 0 if `allow_zero`; or None, if `allow_none`); else a ConfigError naming
    `name`."""
    if value is None and allow_none:
        return value
    if not is_int(value) or value < (0 if allow_zero else 1):
        kind = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{name} must be a {kind} int{' or None' if allow_none else ''}, got {value!r}")
    return value


def choice(name: str, value: Any, choices: Iterable) -> Any:
    """`value` when it is one of `choices`; else a ConfigError listing them."""
    choices = tuple(choices)
    try:
        known = value in choices
    except (TypeError, ValueError):  # e.g. an array, whose comparison is not one truth value
        known = False
    if not known:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value
