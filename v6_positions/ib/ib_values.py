"""IB's value conventions: sentinels mean "missing", and which price represents a contract.

IB sends -1 for "no price" and 1.7976931348623157E308 (Double.MAX_VALUE) / 2147483647 (Integer.MAX_VALUE) /
9223372036854775807 (Long.MAX_VALUE) for unset values; ib_async turns some of them into NaN. In option
computations (tick types 10-13) IB marks what it did not compute with -1 (implied vol, option price, PV
dividend, underlying price) and -2 (delta, gamma, vega, theta). ib_async 2.1 maps -2 to None for delta and
gamma only: vega and theta reach the Ticker as -2.0 — the cleaners here drop them. None of these is a value.

Units (IB's, kept as they are): an option's greeks are per share, i.e. per one unit of the underlying —
delta per share (share-equivalent delta of a position = delta x position x multiplier; dollar delta = that x
the underlying price), gamma per 1.00 move of the underlying, vega per 1 volatility point (0.01 of implied
vol), theta per calendar day; implied vol as a fraction (0.25 = 25 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

SENTINELS = frozenset({1.7976931348623157e308, 2147483647.0, 9223372036854775807.0})
NO_PRICE = -1.0
NOT_COMPUTED = -2.0  # IB's "not computed" for delta, gamma, vega and theta

PriceSource = Literal["mid", "model", "last", "close"]


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
    """Delta lives in [-1, 1]; IB's -2 (ib_async maps it to None) and anything else outside is missing."""
    number = clean_number(value)
    if number is None or not -1.0 <= number <= 1.0:
        return None
    return number


def clean_gamma(value: object) -> float | None:
    """Gamma of a single option is >= 0; IB's -2 and any negative value are missing."""
    number = clean_number(value)
    return number if number is not None and number >= 0 else None


def clean_vega(value: object) -> float | None:
    """Vega of a single option is >= 0 (per vol point); IB's -2, which ib_async passes through, is missing."""
    number = clean_number(value)
    return number if number is not None and number >= 0 else None


def clean_theta(value: object) -> float | None:
    """Theta is usually negative, so only IB's exact -2 sentinel (passed through by ib_async) is missing."""
    number = clean_number(value)
    return None if number is None or number == NOT_COMPUTED else number


def clean_implied_vol(value: object) -> float | None:
    number = clean_number(value)
    return number if number is not None and number >= 0 else None


def price_with_source(
    bid: float | None,
    ask: float | None,
    last: float | None,
    close: float | None,
    model: float | None = None,
) -> tuple[float | None, PriceSource | None]:
    """The price that represents a contract now, and where it came from. Inputs are already cleaned.

    1. mid of a valid two-sided quote (bid > 0, ask > 0, bid <= ask);
    2. IB's model price (tick 13's optPrice) when the quote is one-sided or empty: a far-OTM wing with no bid
       often has a `last` from days ago, far from today's value;
    3. last, then close (stocks have no model price)."""
    if bid is not None and ask is not None and bid > 0 and ask > 0 and bid <= ask:
        return (bid + ask) / 2.0, "mid"
    if model is not None:
        return model, "model"
    if last is not None:
        return last, "last"
    if close is not None:
        return close, "close"
    return None, None


def choose_price(
    bid: float | None,
    ask: float | None,
    last: float | None,
    close: float | None,
    model: float | None = None,
) -> float | None:
    """`price_with_source` without the source: mid, else IB's model price, else last, else close."""
    return price_with_source(bid, ask, last, close, model)[0]


@dataclass(slots=True)
class Greeks:
    """Clean greeks of one option (None = IB did not compute it); units in the module docstring."""

    delta: float | None = None
    gamma: float | None = None
    vega: float | None = None
    theta: float | None = None
    implied_vol: float | None = None
    underlying_price: float | None = None
    model_price: float | None = None  # IB's model price (tick 13 only): what a one-sided quote is worth


_FIELDS = (
    ("delta", "delta", clean_delta),
    ("gamma", "gamma", clean_gamma),
    ("vega", "vega", clean_vega),
    ("theta", "theta", clean_theta),
    ("implied_vol", "impliedVol", clean_implied_vol),
    ("underlying_price", "undPrice", clean_price),
)


def merge_greeks(model: object | None, *fallbacks: object | None) -> Greeks:
    """Greeks from IB's model computation (ib_async `ticker.modelGreeks`), each field that is missing there
    taken from the first fallback computation that has it (e.g. `lastGreeks`, `bidGreeks`, `askGreeks`).

    Computations are read by attribute (ib_async's OptionComputation); None entries are skipped. The model
    price comes from the model computation only: the optPrice of a bid/ask/last computation is that quote."""
    out = Greeks()
    sources = [c for c in (model, *fallbacks) if c is not None]
    for name, attr, clean in _FIELDS:
        for comp in sources:
            value = clean(getattr(comp, attr, None))
            if value is not None:
                setattr(out, name, value)
                break
    if model is not None:
        out.model_price = clean_price(getattr(model, "optPrice", None))
    return out
