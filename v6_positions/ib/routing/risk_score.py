"""The risk score that decides which active legs hold long-lived lines and which rotate.

One pure function, `risk_score`. It answers a trader's question: "how many dollars can this leg's value move
while nobody is watching it?" — the leg's value change for a one-sigma move of its underlying over one trading
hour, delta plus gamma:

    move     = spot * iv * sqrt(1 trading hour)                    (one-sigma underlying move, $)
    dollars  = |position| * multiplier * (|delta| * move + 0.5 * gamma * move**2)
    score    = dollars * expiry_weight * short_weight * move_weight

- Nearest the money: both delta and gamma fade for far wings, so a condor's short strikes outrank its wings.
- Nearest expiry: gamma = pdf(d1) / (spot * iv * sqrt(t)) grows without bound as expiry nears for strikes near
  the money, and `expiry_weight` = 1 + 7 / days-to-expiry (at least 0.25 day) says what a trader says: in its
  last week a leg's greeks go stale fast, so it counts at least double (0-DTE: ~29x, 49 days: ~1.14x).
  A near-term condor's shorts outrank a far-dated one's of the same size; an at-the-money 0-DTE leg outranks
  nearly everything, a 0-DTE wing four sigmas away does not.
- Largest |delta x position x multiplier|: the dollar-delta term.
- Short premium weighs `SHORT_WEIGHT` (1.25) more: a short option's loss is not capped by its premium.
- A recent big underlying move (`underlying_move_sigma`: the last hour's move in hourly sigmas) multiplies the
  score by 1 + max(0, |move| - 1): quiet markets change nothing, a 3-sigma hour triples the attention.
Missing inputs never make a leg look safe: no spot -> at the money (spot = strike); no implied volatility ->
`DEFAULT_IV`; no delta/gamma -> Black-Scholes from strike, spot, time and iv. No position -> a score of 0.
Ties (and zero scores) are broken by nearer expiry, then conid, so the order is total and stable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

DEFAULT_IV = 0.30  # when IB has not sent an implied volatility yet
SHORT_WEIGHT = 1.25
EXPIRY_WEEK_DAYS = 7.0
MIN_EXPIRY_DAYS = 0.25
TRADING_HOUR_YEARS = 1.0 / (252 * 6.5)
MIN_YEARS = 1.0 / (365 * 24 * 4)  # 15 minutes: keeps an expiring leg's gamma finite
_CLOSE = time(16, 0)
_NEW_YORK = ZoneInfo("America/New_York")


@dataclass(slots=True, frozen=True)
class LegRiskInput:
    """What is known about one active leg; None = not known yet."""

    conid: int
    right: str  # "C" | "P"
    strike: float
    expiry: date
    multiplier: float
    position: float
    spot: float | None = None  # underlying price
    implied_vol: float | None = None
    delta: float | None = None  # per share, as IB sends it
    gamma: float | None = None  # per share per $1 of the underlying
    underlying_move_sigma: float | None = None  # last hour's underlying move, in hourly sigmas


@dataclass(slots=True, frozen=True)
class RiskScore:
    conid: int
    score: float  # dollars, weighted (see the module doc)
    dollar_move: float  # the unweighted dollars for a one-sigma hourly move
    days_to_expiry: float
    sigmas_from_strike: float  # |ln(spot/strike)| in standard deviations to expiry
    delta: float
    gamma: float

    def sort_key(self) -> tuple[float, float, int]:
        """Riskiest first: sorted(scores, key=RiskScore.sort_key)."""
        return (-self.score, self.days_to_expiry, self.conid)


def risk_score(leg: LegRiskInput, now: datetime) -> RiskScore:
    """Score one leg at `now` (timezone-aware)."""
    if leg.strike <= 0 or leg.multiplier <= 0:
        raise ValueError(f"leg {leg.conid}: strike={leg.strike} and multiplier={leg.multiplier} must be > 0")
    right = leg.right.upper()[:1]
    if right not in ("C", "P"):
        raise ValueError(f"leg {leg.conid}: right={leg.right!r} must be C or P")
    years = max(years_to_expiry(leg.expiry, now), MIN_YEARS)
    spot = leg.spot if leg.spot is not None and leg.spot > 0 else leg.strike
    iv = leg.implied_vol if leg.implied_vol is not None and leg.implied_vol > 0 else DEFAULT_IV
    d1 = (math.log(spot / leg.strike) + 0.5 * iv * iv * years) / (iv * math.sqrt(years))
    delta = leg.delta if leg.delta is not None else _bs_delta(d1, right)
    gamma = (
        leg.gamma if leg.gamma is not None and leg.gamma >= 0 else _pdf(d1) / (spot * iv * math.sqrt(years))
    )
    move = spot * iv * math.sqrt(TRADING_HOUR_YEARS)
    dollars = abs(leg.position) * leg.multiplier * (abs(delta) * move + 0.5 * gamma * move * move)
    days = years * 365.0
    weight = 1.0 + EXPIRY_WEEK_DAYS / max(days, MIN_EXPIRY_DAYS)
    if leg.position < 0:
        weight *= SHORT_WEIGHT
    if leg.underlying_move_sigma is not None:
        weight *= 1.0 + max(0.0, abs(leg.underlying_move_sigma) - 1.0)
    return RiskScore(
        conid=leg.conid,
        score=dollars * weight,
        dollar_move=dollars,
        days_to_expiry=days,
        sigmas_from_strike=abs(math.log(spot / leg.strike)) / (iv * math.sqrt(years)),
        delta=delta,
        gamma=gamma,
    )


def rank(legs: list[LegRiskInput], now: datetime) -> list[RiskScore]:
    """Every leg's score, riskiest first."""
    return sorted((risk_score(leg, now) for leg in legs), key=RiskScore.sort_key)


def years_to_expiry(expiry: date, now: datetime) -> float:
    """Years from `now` to the expiry day's 16:00 New York close (negative once past)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    close = datetime.combine(expiry, _CLOSE, tzinfo=_NEW_YORK).astimezone(UTC)
    return (close - now).total_seconds() / (365.0 * 86400.0)


def _pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _bs_delta(d1: float, right: str) -> float:
    call = 0.5 * (1.0 + math.erf(d1 / math.sqrt(2.0)))
    return call if right == "C" else call - 1.0
