"""IB's value conventions: sentinels mean "missing", and which price represents a contract.

IB sends -1 for "no price" and 1.7976931348623157E308 (Double.MAX_VALUE) / 2147483647 (Integer.MAX_VALUE) /
9223372036854775807 (Long.MAX_VALUE) for unset values; ib_async turns many of them into NaN. None of these is
ever a price.
"""

from __future__ import annotations

import math

SENTINELS = frozenset({1.7976931348623157e308, 2147483647.0, 9223372036854775807.0})
NO_PRICE = -1.0


def clean_number(value: object) -> float | None:
    """A finite, non-sentinel number, else None (negative values are legitimate: P&L, theta)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number in SENTINELS or -number in SENTINELS:
        return None
    return number


def clean_price(value: object) -> float | None:
    """A usable price, else None: -1 and every other negative number mean "no price"."""
    number = clean_number(value)
    if number is None or number < 0:
        return None
    return number


def clean_delta(value: object) -> float | None:
    """Delta lives in [-1, 1]; ib_async maps IB's -2 to None, anything else outside is bad data."""
    number = clean_number(value)
    if number is None or not -1.0 <= number <= 1.0:
        return None
    return number


def clean_implied_vol(value: object) -> float | None:
    number = clean_number(value)
    return number if number is not None and number >= 0 else None


def choose_price(
    bid: float | None, ask: float | None, last: float | None, close: float | None
) -> float | None:
    """IB's convention: mid of a valid bid/ask, else last, else close. Inputs are already cleaned."""
    if bid is not None and ask is not None and ask > 0 and bid <= ask:
        return (bid + ask) / 2.0
    if last is not None:
        return last
    return close
