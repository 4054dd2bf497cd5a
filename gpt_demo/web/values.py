"""Form values to numbers, with errors that name the field, the value and what is allowed.

    >>> as_float("temperature", "0.7", 0, 2)
    0.7
    >>> as_int("seed", " 42 ")
    42
    >>> optional_int("seed", "") is None
    True
    >>> as_float("temperature", "hot", 0, 2)
    Traceback (most recent call last):
    ...
    ValueError: temperature='hot' is not allowed; allowed: a number from 0 to 2

Sliders send floats (3.0), text boxes strings, a cleared number box None; all land here.
"""

from __future__ import annotations

import math


def _allowed(kind: str, lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"{kind} from {lo} to {hi}"
    if lo is not None:
        return f"{kind} >= {lo}"
    return kind


def as_float(name: str, value, lo: float | None = None, hi: float | None = None) -> float:
    try:
        number = float(value.strip() if isinstance(value, str) else value)
        ok = not isinstance(value, bool) and math.isfinite(number)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok or (lo is not None and number < lo) or (hi is not None and number > hi):
        raise ValueError(f"{name}={value!r} is not allowed; allowed: {_allowed('a number', lo, hi)}")
    return number


def as_int(name: str, value, lo: int | None = None, hi: int | None = None) -> int:
    try:
        number = float(value.strip() if isinstance(value, str) else value)
        ok = not isinstance(value, bool) and math.isfinite(number) and number == int(number)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok or (lo is not None and number < lo) or (hi is not None and number > hi):
        raise ValueError(f"{name}={value!r} is not allowed; allowed: {_allowed('a whole number', lo, hi)}")
    return int(number)


def optional_int(name: str, value, lo: int | None = None, hi: int | None = None) -> int | None:
    """None for a blank box, else ``as_int``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return as_int(name, value, lo, hi)
