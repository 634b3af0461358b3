"""Black-Scholes option prices and greeks (no dividends), in IB's units."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

RISK_FREE_RATE = 0.04
_MIN_YEARS = 1.0 / (365.0 * 24.0)  # an hour: keeps greeks finite on expiry day


@dataclass(slots=True)
class OptionQuote:
    price: float
    delta: float
    gamma: float
    vega: float  # per 1 volatility point (IB's convention), not per 1.0
    theta: float  # per calendar day
    implied_vol: float


def _norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _norm_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def years_to_expiry(expiry: str, today: dt.date | None = None) -> float:
    """Years from today to the expiry date's close; depends only on the date so prices stay deterministic."""
    today = today or dt.date.today()
    days = (dt.datetime.strptime(expiry, "%Y%m%d").date() - today).days + 0.5
    return max(days / 365.0, _MIN_YEARS)


def black_scholes(
    spot: float, strike: float, years: float, vol: float, right: str, rate: float = RISK_FREE_RATE
) -> OptionQuote:
    years = max(years, _MIN_YEARS)
    sqrt_t = math.sqrt(years)
    d1 = (math.log(spot / strike) + (rate + 0.5 * vol * vol) * years) / (vol * sqrt_t)
    d2 = d1 - vol * sqrt_t
    discount = math.exp(-rate * years)
    pdf = _norm_pdf(d1)
    if right == "C":
        price = spot * _norm_cdf(d1) - strike * discount * _norm_cdf(d2)
        delta = _norm_cdf(d1)
        theta_year = -spot * pdf * vol / (2 * sqrt_t) - rate * strike * discount * _norm_cdf(d2)
    else:
        price = strike * discount * _norm_cdf(-d2) - spot * _norm_cdf(-d1)
        delta = _norm_cdf(d1) - 1.0
        theta_year = -spot * pdf * vol / (2 * sqrt_t) + rate * strike * discount * _norm_cdf(-d2)
    gamma = pdf / (spot * vol * sqrt_t)
    vega = spot * pdf * sqrt_t / 100.0
    return OptionQuote(max(price, 0.0), delta, gamma, vega, theta_year / 365.0, vol)
