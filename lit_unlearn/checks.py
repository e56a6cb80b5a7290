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


def one_of(owner: str, name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    if value not in choices:
        raise ValueError(f"{owner}: `{name}` must be one of {choices}, got {value!r}")
    return value


def flag(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: `{name}` must be true or false, got {value!r}")
    return value


def incompatible(callback: str, module: Any, reason: str) -> ValueError:
    """The error a callback raises before the first step when it cannot work with a method."""
    return ValueError(f"{callback} cannot be used with {type(module).__name__}: {reason}")


def only_one(callback: Any, trainer: Any, module: Any, writes: str) -> None:
    """Refuse a second callback of ``callback``'s type on the Trainer (both would write ``writes``)."""
    name = type(callback).__name__
    if any(type(cb) is type(callback) and cb is not callback for cb in trainer.callbacks):
        raise incompatible(name, module, f"the Trainer has more than one {name} callback and each would write "
                                         f"{writes}; keep one")


def needs_retain_term(callback: str, module: Any, because: str) -> None:
    """Refuse a method whose objectives have no retain term (``module.has_retain_term()``)."""
    has_retain = getattr(module, "has_retain_term", None)
    if has_retain is None or not has_retain():
        reason = getattr(module, "no_retain_term_reason", None) or ("the method has no retain term (use a method "
                                                                    "with a retain loss, and pass `retain` to the "
                                                                    "datamodule)")
        raise incompatible(callback, module, f"{because}, and {reason}")
