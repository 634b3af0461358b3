"""Model greeks for options IB sent none for (queued positions): the implied vol solved from the option's
mark, then the greeks at that vol, over whole columns at once (numpy on the column arrays, never a loop per
row).

Model: generalised Black-Scholes-Merton (European exercise) with a flat, continuously compounded rate
(`V6_RISK_FREE_RATE`). Stock and index options carry the rate and no dividend yield; options on futures
(FOP) carry nothing, which is Black-76. Why not a binomial tree for American exercise: a call on a stock
without dividends is never worth exercising early, so its American value is the European one; for puts the
early-exercise premium matters mostly deep in the money, where delta is near -1 and the other greeks are
small. A tree costs hundreds of steps per option per solver step (~1000x the closed form) for a difference
smaller than the gap between any textbook model and IB's own (dividends, its vol surface). A mark that no
European price reaches (a deep American put worth more than the discounted strike) is left null and
counted, never forced.

At intrinsic value: deep in the money an option's time value is a few cents or less, and a mark and an
underlying price taken moments apart (IB's valuation of the position, a stock price or bar of another
instant) can put the mark a little below the floor (the intrinsic value of the forward). Such a mark is read
as all intrinsic value, not as missing: the greeks are the zero-vol limit (delta +-1 per share for stock
options, no gamma or vega, the carry's theta), `implied_vol` null, counted under `at_intrinsic`. Only when
the mark lies within `INTRINSIC_TOLERANCE` of the underlying's price below the floor, and the option is in
the money by more than that (so the same move cannot make it at or out of the money, where delta is not
+-1); a mark further below says the inputs disagree, and stays null (`outside_bounds`).

Units are IB's (see ib/ib_values.py): delta per share, gamma per 1.00 of the underlying, vega per volatility
point, theta per calendar day, implied vol as a fraction. Time to expiry runs from `now` to 16:00 New York
time on the expiry date (when US equity options stop trading), in years of 365 days.

Nothing is invented: a row without a mark or an underlying price, past its expiry, with a mark outside the
no-arbitrage bounds (beyond the tolerance above), or whose vol lies outside [MIN_VOL, MAX_VOL] gets null
greeks and a null `greeks_source`, and is counted under its reason (`ModelGreeksCounts`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, time

import numpy as np
import polars as pl
from numpy.typing import ArrayLike as Values  # an array, or a scalar that broadcasts

from v6_positions.contracts import OPTION_SEC_TYPES

DEFAULT_RATE = 0.04
MIN_VOL = 1e-4
MAX_VOL = 5.0
EXPIRY_CLOSE = time(16, 0)
EXPIRY_TIME_ZONE = "America/New_York"
FUTURES_OPTION_SEC_TYPES = frozenset({"FOP"})  # priced on the futures price: Black-76 (no carry)
GREEK_COLUMNS = ("implied_vol", "delta", "gamma", "vega", "theta")
# How far below its floor a mark may lie and still be read as at intrinsic value, as a share of the
# underlying's price: 0.5 %, a few minutes' move of a volatile stock (TSLA's 55 % a year is ~0.25 % in two
# minutes), far beyond any rounding of IB's values, far below the time value of an option near the money.
INTRINSIC_TOLERANCE = 0.005
_SECONDS_PER_YEAR = 365.0 * 86400.0
_SOLVER_ITERATIONS = 100
_PRICE_TOLERANCE = 1e-10  # of the strike: far below a cent for any strike
_RIGHTS = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}


@dataclass(slots=True)
class ModelGreeksCounts:
    """Rows by outcome: `computed`, not an option, or the first reason an option got no model greeks.
    `at_intrinsic` is the part of `computed` whose mark was at (or within the tolerance below) its floor."""

    computed: int = 0
    not_option: int = 0
    bad_contract: int = 0  # right not call/put, or strike not > 0
    no_expiry: int = 0  # expiry missing or not YYYYMMDD
    expired: int = 0
    no_mark: int = 0  # market_price missing or not > 0
    no_underlying: int = 0  # underlying_price missing or not > 0
    outside_bounds: int = 0  # mark at or beyond the no-arbitrage bounds (at/below intrinsic, above the max)
    no_solution: int = 0  # implied vol outside [MIN_VOL, MAX_VOL]
    at_intrinsic: int = 0  # of `computed`: greeks of the zero-vol limit (mark at or just below its floor)

    @property
    def missing(self) -> int:
        """Options left without model greeks."""
        return self.options - self.computed

    @property
    def options(self) -> int:
        return sum(dataclasses.astuple(self)) - self.not_option - self.at_intrinsic

    def missing_by_reason(self) -> dict[str, int]:
        """Why options got no model greeks: reason -> options (reasons with none left out)."""
        skip = ("computed", "not_option", "at_intrinsic")
        return {name: n for name, n in dataclasses.asdict(self).items() if n and name not in skip}


@dataclass(slots=True)
class ModelGreeks:
    frame: pl.DataFrame
    counts: ModelGreeksCounts


# Outcome codes, in the order reasons are judged (the first that applies is counted).
_COMPUTED, _NOT_OPTION, _BAD_CONTRACT, _NO_EXPIRY, _EXPIRED, _NO_MARK, _NO_UNDERLYING = range(7)
_OUTSIDE_BOUNDS, _NO_SOLUTION = 7, 8
_OUTCOME_NAMES = [f.name for f in dataclasses.fields(ModelGreeksCounts)][: _NO_SOLUTION + 1]


# ---- the normal distribution ------------------------------------------------------------------------------
# Hart's rational approximation, highest power first (np.polyval)
_HART_NUMERATOR = (
    0.0352624965998911, 0.700383064443688, 6.37396220353165, 33.912866078383, 112.079291497871,
    221.213596169931, 220.206867912376,
)  # fmt: skip
_HART_DENOMINATOR = (
    0.0883883476483184, 1.75566716318264, 16.064177579207, 86.7807322029461, 296.564248779674,
    637.333633378831, 793.826512519948, 440.413735824752,
)  # fmt: skip


def norm_cdf(x: Values) -> np.ndarray:
    """Standard normal CDF to ~1e-14 (Hart 1968, double precision, as given by G. West, "Better approximations
    to cumulative normal functions", Wilmott 2005); numpy has no erf and scipy is not a dependency."""
    x = np.asarray(x, dtype=float)
    z = np.abs(x)
    e = np.exp(-0.5 * z * z)
    num, den = np.polyval(_HART_NUMERATOR, z), np.polyval(_HART_DENOMINATOR, z)
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = z + 1.0 / (z + 2.0 / (z + 3.0 / (z + 4.0 / (z + 0.65))))
        far = e / tail / 2.506628274631
    lower = np.where(z < 7.07106781186547, e * num / den, far)
    lower = np.where(z > 37.0, 0.0, lower)
    return np.where(x > 0, 1.0 - lower, lower)


def norm_pdf(x: Values) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)


# ---- generalised Black-Scholes-Merton (cost of carry b: b = r for stocks, b = 0 for futures) -------------
@dataclass(slots=True)
class OptionValues:
    """Per share; vega per volatility point, theta per calendar day (IB's units)."""

    price: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta: np.ndarray


def _d1(spot: Values, strike: Values, years: Values, vol: Values, carry: Values) -> np.ndarray:
    return (np.log(spot / strike) + (carry + 0.5 * vol * vol) * years) / (vol * np.sqrt(years))


def option_price(
    spot: Values, strike: Values, years: Values, vol: Values, is_call: Values, rate: float, carry: Values
) -> np.ndarray:
    d1 = _d1(spot, strike, years, vol, carry)
    d2 = d1 - vol * np.sqrt(years)
    fwd = spot * np.exp((carry - rate) * years)  # the spot's discounted forward
    pv_strike = strike * np.exp(-rate * years)
    call = fwd * norm_cdf(d1) - pv_strike * norm_cdf(d2)
    put = pv_strike * norm_cdf(-d2) - fwd * norm_cdf(-d1)
    return np.where(is_call, call, put)


def option_values(
    spot: Values, strike: Values, years: Values, vol: Values, is_call: Values, rate: float, carry: Values
) -> OptionValues:
    """Price and greeks of European options; every argument an array (or scalar) broadcast together."""
    sqrt_t = np.sqrt(years)
    d1 = _d1(spot, strike, years, vol, carry)
    d2 = d1 - vol * sqrt_t
    growth = np.exp((carry - rate) * years)
    pv_strike = strike * np.exp(-rate * years)
    pdf = norm_pdf(d1)
    n1, n2, m1, m2 = norm_cdf(d1), norm_cdf(d2), norm_cdf(-d1), norm_cdf(-d2)
    decay = -spot * growth * pdf * vol / (2.0 * sqrt_t)
    call_theta = decay - (carry - rate) * spot * growth * n1 - rate * pv_strike * n2
    put_theta = decay + (carry - rate) * spot * growth * m1 + rate * pv_strike * m2
    return OptionValues(
        price=np.where(is_call, spot * growth * n1 - pv_strike * n2, pv_strike * m2 - spot * growth * m1),
        delta=np.where(is_call, growth * n1, growth * (n1 - 1.0)),
        gamma=growth * pdf / (spot * vol * sqrt_t),
        vega=spot * growth * pdf * sqrt_t / 100.0,
        theta=np.where(is_call, call_theta, put_theta) / 365.0,
    )


def price_bounds(
    spot: Values, strike: Values, years: Values, is_call: Values, rate: float, carry: Values
) -> tuple[np.ndarray, np.ndarray]:
    """No-arbitrage bounds of a European price: (intrinsic value of the forward, its zero-vol price; the
    largest it can be worth, its infinite-vol price)."""
    fwd = spot * np.exp((carry - rate) * years)
    pv_strike = strike * np.exp(-rate * years)
    lower = np.maximum(np.where(is_call, fwd - pv_strike, pv_strike - fwd), 0.0)
    upper = np.where(is_call, fwd, pv_strike)
    return lower, upper


def implied_vol(
    price: Values, spot: Values, strike: Values, years: Values, is_call: Values, rate: float, carry: Values
) -> np.ndarray:
    """The vol whose model price equals `price`, per element; NaN where none lies in [MIN_VOL, MAX_VOL].

    Newton's method on the price (its derivative is vega), kept inside a bracket that every step narrows
    (the price rises with vol): a Newton step that would leave the bracket, or a vega too flat to trust,
    becomes a bisection, so deep in- and out-of-the-money options converge too. Only unconverged rows are
    recomputed each round."""
    price, spot, strike, years, is_call = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(a, dtype=float)) for a in (price, spot, strike, years)),
        np.asarray(is_call, dtype=bool),
    )
    carry = np.broadcast_to(np.asarray(carry, dtype=float), price.shape)
    vol = np.full(price.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        low_price = option_price(spot, strike, years, MIN_VOL, is_call, rate, carry)
        high_price = option_price(spot, strike, years, MAX_VOL, is_call, rate, carry)
        todo = np.flatnonzero((price >= low_price) & (price <= high_price))
        s, k, t, c, b, target = spot[todo], strike[todo], years[todo], is_call[todo], carry[todo], price[todo]
        low, high = np.full(todo.size, MIN_VOL), np.full(todo.size, MAX_VOL)
        # Brenner-Subrahmanyam's at-the-money start; the bracket takes care of the rest
        guess = np.clip(np.sqrt(2.0 * np.pi / t) * target / s, 0.05, 2.0)
        live = np.arange(todo.size)
        for _ in range(_SOLVER_ITERATIONS):
            if live.size == 0:
                break
            x = guess[live]
            values = option_values(s[live], k[live], t[live], x, c[live], rate, b[live])
            diff = values.price - target[live]
            done = np.abs(diff) <= _PRICE_TOLERANCE * k[live]
            too_high = diff > 0
            high[live] = np.where(too_high, x, high[live])
            low[live] = np.where(too_high, low[live], x)
            step = x - diff / (values.vega * 100.0)
            inside = (step > low[live]) & (step < high[live])
            guess[live] = np.where(done, x, np.where(inside, step, 0.5 * (low[live] + high[live])))
            live = live[~done & (high[live] - low[live] > 1e-12)]
        solved = np.ones(todo.size, dtype=bool)
        solved[live] = False  # still unconverged after every round
        vol[todo[solved]] = guess[solved]
    return vol


# ---- over a frame ---------------------------------------------------------------------------------------
def years_to_expiry(expiry: pl.Expr, now: datetime) -> pl.Expr:
    """Years (of 365 days) from `now` to 16:00 New York time on the expiry date (YYYYMMDD, IB's spelling);
    null when the expiry is not a date. Negative once expired."""
    if now.tzinfo is None:
        raise ValueError(f"now={now!r} must be timezone-aware (e.g. datetime.now(UTC))")
    day = pl.when(expiry.str.contains(r"^\d{8}")).then(expiry.str.slice(0, 8))
    close = (
        day.str.strptime(pl.Date, "%Y%m%d", strict=False)
        .dt.combine(EXPIRY_CLOSE)
        .dt.replace_time_zone(EXPIRY_TIME_ZONE, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
    )
    start = pl.lit(now).dt.convert_time_zone("UTC")
    return (close - start).dt.total_microseconds() / (_SECONDS_PER_YEAR * 1e6)


def _inputs(frame: pl.DataFrame, now: datetime) -> pl.DataFrame:
    sec_type = pl.col("sec_type").cast(pl.String).fill_null("OPT").str.strip_chars().str.to_uppercase()
    right = pl.col("right").cast(pl.String).str.strip_chars().str.to_uppercase()
    return frame.select(
        is_option=sec_type.is_in(sorted(OPTION_SEC_TYPES)),
        is_futures_option=sec_type.is_in(sorted(FUTURES_OPTION_SEC_TYPES)),
        right=right.replace_strict(_RIGHTS, default=None, return_dtype=pl.String),
        strike=pl.col("strike").cast(pl.Float64),
        years=years_to_expiry(pl.col("expiry").cast(pl.String), now),
        mark=pl.col("market_price").cast(pl.Float64),
        spot=pl.col("underlying_price").cast(pl.Float64),
    )


def model_greeks(frame: pl.DataFrame, *, now: datetime, rate: float = DEFAULT_RATE) -> ModelGreeks:
    """Model greeks for every row of `frame` from its mark and underlying price.

    Reads sec_type, right, strike, expiry, market_price and underlying_price; returns the frame with
    implied_vol, delta, gamma, vega and theta replaced by the model's (null where there are none) and
    `greeks_source` "model" or null, plus the counts by outcome."""
    missing = [
        c
        for c in ("sec_type", "right", "strike", "expiry", "market_price", "underlying_price")
        if c not in frame.columns
    ]
    if missing:
        raise ValueError(f"model_greeks: frame lacks column(s) {', '.join(missing)}; has {frame.columns}")
    inputs = _inputs(frame, now)
    is_option = inputs["is_option"].to_numpy()
    is_call = (inputs["right"] == "C").fill_null(False).to_numpy()
    has_right = inputs["right"].is_not_null().to_numpy()
    strike, years, mark, spot = (
        inputs[c].to_numpy().astype(float) for c in ("strike", "years", "mark", "spot")
    )
    carry = np.where(inputs["is_futures_option"].to_numpy(), 0.0, rate)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        lower, upper = price_bounds(spot, strike, years, is_call, rate, carry)
        tolerance = INTRINSIC_TOLERANCE * spot
        at_floor = (lower > tolerance) & (mark <= lower) & (mark >= lower - tolerance)
        outcome = np.select(
            [
                ~is_option,
                ~has_right | ~(strike > 0),
                np.isnan(years),
                ~(years > 0),
                ~(mark > 0),
                ~(spot > 0),
                ~((mark > lower) & (mark < upper)) & ~at_floor,
            ],
            [_NOT_OPTION, _BAD_CONTRACT, _NO_EXPIRY, _EXPIRED, _NO_MARK, _NO_UNDERLYING, _OUTSIDE_BOUNDS],
            default=_COMPUTED,
        )
        at_intrinsic = (outcome == _COMPUTED) & at_floor
        solve = np.flatnonzero((outcome == _COMPUTED) & ~at_floor)
        vol = np.full(len(frame), np.nan)
        vol[solve] = implied_vol(
            mark[solve], spot[solve], strike[solve], years[solve], is_call[solve], rate, carry[solve]
        )
        outcome[solve[np.isnan(vol[solve])]] = _NO_SOLUTION
        rows = np.flatnonzero(outcome == _COMPUTED)
        # At intrinsic value the greeks are the zero-vol limit: priced at MIN_VOL, reported without a vol.
        vol_used = np.where(at_intrinsic, MIN_VOL, vol)
        values = option_values(
            spot[rows], strike[rows], years[rows], vol_used[rows], is_call[rows], rate, carry[rows]
        )
    columns = {
        "implied_vol": vol[rows],
        "delta": values.delta,
        "gamma": values.gamma,
        "vega": values.vega,
        "theta": values.theta,
    }
    out = []
    for name in GREEK_COLUMNS:
        full = np.full(len(frame), np.nan)
        full[rows] = columns[name]
        out.append(pl.Series(name, full, dtype=pl.Float64, nan_to_null=True))
    computed = pl.Series(outcome == _COMPUTED, dtype=pl.Boolean)
    out.append(pl.when(computed).then(pl.lit("model", pl.String)).otherwise(None).alias("greeks_source"))
    counts = ModelGreeksCounts(
        **dict(zip(_OUTCOME_NAMES, np.bincount(outcome, minlength=9).tolist(), strict=True)),
        at_intrinsic=int(at_intrinsic.sum()),
    )
    return ModelGreeks(frame.with_columns(out), counts)


def with_model_greeks(book: pl.DataFrame, *, now: datetime, rate: float = DEFAULT_RATE) -> ModelGreeks:
    """IB's greeks where a row has them (`delta` not null: greeks_source "ib"), the model's for every other
    row ("model", or null when inputs are missing). Counts cover the rows that needed the model; row order
    is kept."""
    if "delta" in book.columns:
        has_ib = book["delta"].is_not_null()
    else:
        has_ib = pl.repeat(False, len(book), eager=True)
    indexed = book.with_row_index("__row")
    modelled = model_greeks(indexed.filter(~has_ib), now=now, rate=rate)
    from_ib = indexed.filter(has_ib).with_columns(greeks_source=pl.lit("ib", dtype=pl.String))
    merged = pl.concat([from_ib, modelled.frame], how="diagonal_relaxed").sort("__row").drop("__row")
    return ModelGreeks(merged, modelled.counts)
