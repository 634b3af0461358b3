"""Model greeks: textbook values, the simulator's greeks over TCP, and nothing invented where inputs lack.

Textbook references (J. C. Hull, "Options, Futures, and Other Derivatives", 9th ed.):
- ch. 19 "The Greek Letters", the running example (a bank sold calls on 100,000 shares of a non-dividend
  stock): S0 = 49, K = 50, r = 5 %, sigma = 20 %, T = 20 weeks = 0.3846 years; Black-Scholes price $2.40
  (the "$240,000"), delta 0.522, gamma 0.066, theta -4.31 per year (-0.0118 per calendar day), vega 12.1 per
  unit of volatility (0.121 per volatility point);
- ch. 15 "The Black-Scholes-Merton Model", the worked pricing example: S0 = 42, K = 40, r = 10 %,
  sigma = 20 %, T = 0.5: c = 4.76, p = 0.81; and the implied-volatility example: c = 1.875 with S0 = 21,
  K = 20, r = 10 %, T = 0.25 gives sigma = 0.235;
- ch. 18 "Futures Options" (Black's model), the crude-oil put: F0 = K = 20, r = 9 %, T = 4 months,
  sigma = 25 %: p = 1.12.
The book prints 2-3 significant digits: each check allows half a unit of the last printed digit, plus what
solving the vol from a price printed to the cent moves it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from polling import wait_until

from v6_positions.ib.ib_values import merge_greeks, price_with_source
from v6_positions.risk.model_greeks import (
    INTRINSIC_TOLERANCE,
    ModelGreeksCounts,
    implied_vol,
    model_greeks,
    norm_cdf,
    option_values,
    price_bounds,
    with_model_greeks,
    years_to_expiry,
)
from v6_positions.simulator import Book, BookContract, BookPosition, SimulatorThread, Underlying
from v6_positions.simulator.pricing import RISK_FREE_RATE
from v6_positions.simulator.pricing import years_to_expiry as sim_years_to_expiry

UTC = dt.UTC


def test_normal_cdf_matches_erfc_to_double_precision() -> None:
    x = np.linspace(-12.0, 12.0, 48_001)
    exact = np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in x])
    assert np.max(np.abs(norm_cdf(x) - exact)) < 1e-14


def test_hull_greek_letters_example() -> None:
    years = 20 / 52
    vol = implied_vol(2.40, 49.0, 50.0, years, True, 0.05, 0.05)[0]
    assert vol == pytest.approx(0.20, abs=0.0005)  # 2.40 is the 0.20-vol price printed to the cent
    g = option_values(49.0, 50.0, years, vol, True, 0.05, 0.05)
    assert float(g.delta) == pytest.approx(0.522, abs=0.0005)
    assert float(g.gamma) == pytest.approx(0.066, abs=0.0005)
    assert float(g.theta) * 365 == pytest.approx(-4.31, abs=0.005 + 0.01)  # per year; the vol moved ~0.0001
    assert float(g.theta) == pytest.approx(-0.0118, abs=0.00005)  # per calendar day, IB's unit
    assert float(g.vega) == pytest.approx(0.121, abs=0.0005)  # per volatility point, IB's unit
    exact = option_values(49.0, 50.0, years, 0.20, True, 0.05, 0.05)
    assert float(exact.price) == pytest.approx(2.40, abs=0.005)


def test_hull_black_scholes_examples_and_implied_vol() -> None:
    call, put = (
        np.array([True, False]),
        option_values(42.0, 40.0, 0.5, 0.20, np.array([True, False]), 0.1, 0.1),
    )
    assert put.price[0] == pytest.approx(4.76, abs=0.005) and put.price[1] == pytest.approx(0.81, abs=0.005)
    vols = implied_vol(np.array([4.76, 0.81]), 42.0, 40.0, 0.5, call, 0.1, 0.1)
    assert vols == pytest.approx([0.20, 0.20], abs=0.0005)
    assert implied_vol(1.875, 21.0, 20.0, 0.25, True, 0.1, 0.1)[0] == pytest.approx(0.235, abs=0.0005)


def test_hull_black76_futures_put() -> None:
    # carry 0: Black's model for options on futures (the FOP path)
    put = option_values(20.0, 20.0, 4 / 12, 0.25, False, 0.09, 0.0)
    assert float(put.price) == pytest.approx(1.12, abs=0.005)
    assert implied_vol(1.12, 20.0, 20.0, 4 / 12, False, 0.09, 0.0)[0] == pytest.approx(0.25, abs=0.002)


def test_implied_vol_recovers_the_vol_across_moneyness_expiry_and_vol() -> None:
    """Newton with the bisection fallback: deep in/out of the money, 1 day to 2 years, 5 % to 300 % vol."""
    moneyness, years, vols, rights = np.meshgrid(
        np.linspace(0.5, 1.5, 21), [1 / 365, 7 / 365, 0.1, 0.5, 2.0], [0.05, 0.2, 0.6, 3.0], [True, False]
    )
    strike, t, sigma, is_call = 100.0 * moneyness.ravel(), years.ravel(), vols.ravel(), rights.ravel()
    truth = option_values(100.0, strike, t, sigma, is_call, 0.04, 0.04)
    solved = implied_vol(truth.price, 100.0, strike, t, is_call, 0.04, 0.04)
    # where the price hardly moves with vol (vega < 0.01 per point) no price can pin the vol down
    informative = truth.vega > 0.01
    assert informative.sum() > 400  # of 840
    assert np.nanmax(np.abs(solved[informative] - sigma[informative])) < 1e-6


def _book(rows: list[dict]) -> pl.DataFrame:
    base = {
        "sec_type": "OPT",
        "right": "C",
        "strike": 100.0,
        "expiry": "20270115",
        "market_price": 5.0,
        "underlying_price": 101.0,
        "delta": None,
    }
    return pl.DataFrame(
        [{**base, **row} for row in rows],
        schema_overrides={"delta": pl.Float64, "underlying_price": pl.Float64},
    )


NOW = dt.datetime(2026, 12, 3, 15, 0, tzinfo=UTC)


def test_missing_inputs_give_null_never_a_number_and_are_counted() -> None:
    book = _book(
        [
            {},  # computable
            {"sec_type": "STK", "right": None, "strike": None, "expiry": None, "market_price": 101.0},
            {"right": "X"},
            {"strike": 0.0},
            {"expiry": "202701"},  # a month, not a date
            {"expiry": "20261202"},  # expired yesterday
            {"market_price": None},
            {"market_price": -1.0},  # IB's "no price" if it slipped through
            {"underlying_price": None},
            {"strike": 50.0, "market_price": 50.0},  # below intrinsic (~51 discounted)
            {"market_price": 102.0},  # a call worth more than the stock
            {"right": "P", "market_price": 95.0},  # within the bounds, but only a vol above 500 % prices it
        ]
    )
    result = model_greeks(book, now=NOW)
    frame = result.frame
    assert frame["greeks_source"].to_list() == ["model"] + [None] * 11
    for column in ("implied_vol", "delta", "gamma", "vega", "theta"):
        values = frame[column].to_list()
        assert values[0] is not None and math.isfinite(values[0])
        assert values[1:] == [None] * 11, column  # null, not NaN: NaN would sum into totals
    assert result.counts == ModelGreeksCounts(
        computed=1,
        not_option=1,
        bad_contract=2,
        no_expiry=1,
        expired=1,
        no_mark=2,
        no_underlying=1,
        outside_bounds=2,
        no_solution=1,
    )
    assert result.counts.missing == 10 and result.counts.options == 11
    backwards = model_greeks(book.reverse(), now=NOW).frame  # a null first must not change the column type
    assert backwards["greeks_source"].to_list() == [None] * 11 + ["model"]


def test_a_mark_just_below_its_floor_is_intrinsic_value_within_the_stated_tolerance() -> None:
    # A deep in-the-money mark and a spot of moments apart: the mark a little under the forward's intrinsic
    # value is read as all intrinsic value (the zero-vol limit), never a solved vol; further under, or on an
    # option barely in the money, it stays null.
    spot, expiry, rate = 100.0, "20261218", 0.05
    years = pl.select(years_to_expiry(pl.lit(expiry), NOW)).item()
    pv = math.exp(-rate * years)
    call_floor, put_floor = spot - 80.0 * pv, 120.0 * pv - spot
    tolerance = INTRINSIC_TOLERANCE * spot  # 0.50
    book = _book(
        [
            {"strike": 80.0, "market_price": call_floor - 0.10},
            {"right": "P", "strike": 120.0, "market_price": put_floor - 0.45},
            {"strike": 80.0, "market_price": call_floor},
            {"strike": 80.0, "market_price": call_floor - tolerance - 0.05},  # beyond the tolerance
            {"strike": 99.8, "market_price": 0.05},  # in the money by less than the tolerance
        ]
    ).with_columns(expiry=pl.lit(expiry), underlying_price=pl.lit(spot))
    result = model_greeks(book, now=NOW, rate=rate)
    frame = result.frame
    assert frame["greeks_source"].to_list() == ["model", "model", "model", None, None]
    assert frame["implied_vol"].to_list() == [None] * 5  # no vol was solved: nothing to report
    assert frame["delta"].to_list()[:3] == pytest.approx([1.0, -1.0, 1.0], abs=1e-12)
    assert frame["gamma"].to_list()[:3] == [0.0] * 3 and frame["vega"].to_list()[:3] == [0.0] * 3
    # the zero-vol theta is the carry of the discounted strike: a day less of discounting
    assert frame["theta"][0] == pytest.approx(-rate * 80.0 * pv / 365.0, rel=1e-9)
    assert frame["theta"][1] == pytest.approx(rate * 120.0 * pv / 365.0, rel=1e-9)
    assert result.counts == ModelGreeksCounts(computed=3, at_intrinsic=3, outside_bounds=2)
    assert result.counts.missing == 2 and result.counts.missing_by_reason() == {"outside_bounds": 2}


def test_ib_greeks_are_kept_and_labelled_and_only_the_rest_modelled() -> None:
    book = _book([{"delta": 0.61}, {}, {"market_price": None}]).with_columns(
        gamma=pl.Series([0.02, None, None]), conid=pl.Series([1, 2, 3])
    )
    result = with_model_greeks(book, now=NOW)
    frame = result.frame
    assert frame["conid"].to_list() == [1, 2, 3]
    assert frame["greeks_source"].to_list() == ["ib", "model", None]
    assert frame["delta"][0] == 0.61 and frame["gamma"][0] == 0.02  # IB's, untouched
    assert 0 < frame["delta"][1] < 1 and frame["delta"][2] is None
    assert result.counts.computed == 1 and result.counts.no_mark == 1


def test_time_to_expiry_runs_to_the_new_york_close_across_daylight_saving() -> None:
    now = dt.datetime(2026, 12, 3, 21, 0, tzinfo=UTC)  # 16:00 New York (EST)
    frame = pl.DataFrame({"expiry": ["20261204", "20270416", "20261203", "2027", None]})
    years = frame.select(y=years_to_expiry(pl.col("expiry"), now))["y"].to_list()
    assert years[0] * 365 == pytest.approx(1.0)
    assert years[1] * 365 * 24 == pytest.approx((dt.date(2027, 4, 16) - dt.date(2026, 12, 3)).days * 24 - 1)
    assert years[2] == 0.0 and years[3] is None and years[4] is None
    with pytest.raises(ValueError, match="timezone-aware"):
        years_to_expiry(pl.col("expiry"), dt.datetime(2026, 12, 3))


# ---- against the simulator's greeks, streamed over TCP to the unmodified ib_async client ---------------
SPOT = 500.0
DAYS = (7, 30, 90, 240)
MONEYNESS = (0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15)


def _ladder_book() -> Book:
    today = dt.date.today()
    book = Book(accounts=["DU1"], underlyings={"XYZ": Underlying("XYZ", SPOT, 0.30, 555)})
    conid = 1000
    for days in DAYS:
        expiry = (today + dt.timedelta(days=days)).strftime("%Y%m%d")
        for m in MONEYNESS:
            for right in ("C", "P"):
                conid += 1
                contract = BookContract(conid, "XYZ", "OPT", expiry, SPOT * m, right)
                book.positions[("DU1", conid)] = BookPosition("DU1", contract, -1.0, 100.0)
                book.contracts[conid] = contract
    return book


def _streamed_legs(book: Book) -> pl.DataFrame:
    """One row per leg as the stream stores it: the quote's mid as the mark, IB's greeks and underlying."""
    from ib_async import IB, Contract

    async def main(port: int) -> list[dict]:
        ib = IB()
        await ib.connectAsync("127.0.0.1", port, clientId=7, readonly=True, timeout=4)
        try:
            contracts = {conid: Contract(conId=conid, exchange="SMART") for _, conid in book.positions}
            tickers = {conid: ib.reqMktData(c) for conid, c in contracts.items()}
            await wait_until(lambda: all(t.modelGreeks and t.bid > 0 for t in tickers.values()), timeout=15)
            rows = []
            for conid, t in tickers.items():
                c = book.contracts[conid]
                greeks = merge_greeks(t.modelGreeks)
                mark, _ = price_with_source(t.bid, t.ask, t.last, t.close, greeks.model_price)
                rows.append(
                    {
                        "conid": conid,
                        "sec_type": "OPT",
                        "right": c.right,
                        "strike": c.strike,
                        "expiry": c.expiry,
                        "market_price": mark,
                        "underlying_price": greeks.underlying_price,
                        "ib_delta": greeks.delta,
                        "ib_gamma": greeks.gamma,
                        "ib_vega": greeks.vega,
                        "ib_theta": greeks.theta,
                        "ib_iv": greeks.implied_vol,
                    }
                )
            return rows
        finally:
            ib.disconnect()

    # the walk never steps (tick interval of an hour), so every quote and its greeks come from one price
    with SimulatorThread(book, tick_interval=3600.0) as sim:
        return pl.DataFrame(asyncio.run(main(sim.port)))


@pytest.fixture(scope="module")
def streamed() -> pl.DataFrame:
    return _streamed_legs(_ladder_book())


def _priced_by_vol(frame: pl.DataFrame) -> pl.DataFrame:
    """Legs whose mark is >= $0.50 above its zero-vol floor (the discounted intrinsic value): the mark's
    rounding to the cent (<= half a cent) is then <= 1 % of what the vol prices. Below that the vol, and with
    it gamma, vega and theta, is set by the rounding, not by the market (a 7-day call $75 in the money has
    $0.02 of it)."""
    years = np.array([sim_years_to_expiry(e) for e in frame["expiry"]])
    is_call = (frame["right"] == "C").to_numpy()
    spot, strike = frame["underlying_price"].to_numpy(), frame["strike"].to_numpy()
    floor, _ = price_bounds(spot, strike, years, is_call, RISK_FREE_RATE, RISK_FREE_RATE)
    return frame.filter(pl.Series(frame["market_price"].to_numpy() - floor >= 0.5))


def _errors(frame: pl.DataFrame) -> pl.DataFrame:
    frame = _priced_by_vol(frame)
    return frame.select(
        "conid",
        "market_price",
        delta=(pl.col("delta") - pl.col("ib_delta")).abs(),
        gamma=((pl.col("gamma") - pl.col("ib_gamma")) / pl.col("ib_gamma")).abs(),
        vega=((pl.col("vega") - pl.col("ib_vega")) / pl.col("ib_vega")).abs(),
        theta=((pl.col("theta") - pl.col("ib_theta")) / pl.col("ib_theta")).abs(),
        iv=(pl.col("implied_vol") - pl.col("ib_iv")).abs(),
    )


def test_model_greeks_match_the_simulators_for_streamed_legs(streamed: pl.DataFrame) -> None:
    """Same clock as the simulator (its time to expiry): what is left is the mark's rounding to the cent.

    Tolerance on legs with >= $0.50 of time value: |delta| 0.005, gamma, vega and theta within 2 %,
    implied vol within 0.005."""
    assert len(streamed) == len(DAYS) * len(MONEYNESS) * 2
    years = np.array([sim_years_to_expiry(e) for e in streamed["expiry"]])
    is_call = (streamed["right"] == "C").to_numpy()
    price, spot = streamed["market_price"].to_numpy(), streamed["underlying_price"].to_numpy()
    strike = streamed["strike"].to_numpy()
    vol = implied_vol(price, spot, strike, years, is_call, RISK_FREE_RATE, RISK_FREE_RATE)
    g = option_values(spot, strike, years, vol, is_call, RISK_FREE_RATE, RISK_FREE_RATE)
    frame = streamed.with_columns(implied_vol=vol, delta=g.delta, gamma=g.gamma, vega=g.vega, theta=g.theta)
    errors = _errors(frame)
    assert len(errors) >= 40
    worst = errors.select(pl.all().exclude("conid", "market_price").max()).row(0, named=True)
    assert worst["delta"] < 0.005 and worst["iv"] < 0.005, worst
    assert max(worst["gamma"], worst["vega"], worst["theta"]) < 0.02, worst


@pytest.mark.parametrize("hour", [0, 12, 23])
def test_model_greeks_match_the_simulator_from_the_lake_rows_at_any_hour(
    streamed: pl.DataFrame, hour: int
) -> None:
    """The frame path, with its own clock (expiry at 16:00 New York). The simulator counts (days + 0.5) / 365,
    so the two clocks differ by at most ~0.7 day whatever the hour: for expiries of 30 days or more that is
    <= 2.3 % of the time, which moves theta (~1/T) and vega (~sqrt T) and hardly delta or gamma (the solved
    vol keeps vol x sqrt(T)). Tolerance: |delta| 0.01, gamma and vega 3 %, theta 5 %, on legs with >= $0.50
    of time value."""
    now = dt.datetime.combine(dt.date.today(), dt.time(hour, 30), UTC)
    far = streamed.filter(pl.col("expiry") >= (dt.date.today() + dt.timedelta(days=30)).strftime("%Y%m%d"))
    result = model_greeks(far, now=now, rate=RISK_FREE_RATE)
    assert result.counts.computed == len(far)
    errors = _errors(result.frame)
    assert len(errors) >= 30
    worst = errors.select(pl.all().exclude("conid", "market_price").max()).row(0, named=True)
    assert worst["delta"] < 0.01, worst
    assert worst["gamma"] < 0.03 and worst["vega"] < 0.03 and worst["theta"] < 0.05, worst
