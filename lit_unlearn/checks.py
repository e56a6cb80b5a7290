"""Argument checks shared by every public class: each raises ``ValueError`` naming the owner,
the argument and the accepted range, and returns the value."""

from __future__ import annotations

import math
from typing import Any


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive(owner: str, name: str, value: Any) -> float:
    """A finite number > 0."""
    if not _number(value) or value <= 0:
        raise ValueError(f"{owner}: `{name}` must be a number > 0, got {value!r}")
    return float(value)


def non_negative(owner: str, name: str, value: Any) -> float:
    """A finite number >= 0."""
    if not _number(value) or value < 0:
        raise ValueError(f"{owner}: `{name}` must be a finite number >= 0, got {value!r}")
    return float(value)


def finite(owner: str, name: str, value: Any) -> float:
    if not _number(value):
        raise ValueError(f"{owner}: `{name}` must be a finite number, got {value!r}")
    return float(value)


def positive_int(owner: str, name: str, value: Any, optional: bool = False) -> int | None:
    """An integer >= 1 (or None when ``optional``)."""
    if optional and value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: `{name}` must be a positive integer{' or None' if optional else ''}, got {value!r}")
    return value


def flag(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: `{name}` must be true or false, got {value!r}")
    return value
