"""Position risk and its sums on the demo book's iron condors, checked against sums done by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from v6_positions.commands.launch import register_demo_legs
from v6_positions.lake.history import write_rows
from v6_positions.lake.positions import read_positions
from v6_positions.lake.registry import StrategyRegistry
from v6_positions.lake.rows import PositionRow
from v6_positions.risk.aggregates import coverage, strategy_risk, underlying_risk
from v6_positions.risk.position_risk import position_risk, strategy_legs
from v6_positions.risk.refresh import compute_risk
from v6_positions.simulator import load_book
from v6_positions.simulator.demo_books import DEMO_ACCOUNT
from v6_positions.simulator.pricing import black_scholes, years_to_expiry

NOW = datetime.now(UTC)
STALE_AFTER_S = 300.0


def demo_rows(book, minutes_ago: dict[int, float] | None = None) -> list[PositionRow]:
    """Every option and stock of the demo book as the lake holds it: the condor legs as streamed (IB's greeks,
    the underlying price, the prior close), the other options as queued (value only, no greeks), the stocks
    as queued too. Greeks and prices from the simulator's own model, only to have realistic numbers."""
    rows = []
    for (account, conid), held in sorted(book.positions.items()):
        contract = held.contract
        und = book.underlyings[contract.symbol]
        event_time = NOW - timedelta(minutes=(minutes_ago or {}).get(conid, 0.1))
        if contract.sec_type != "OPT":
            rows.append(PositionRow(account=account, conid=conid, symbol=contract.symbol, sec_type="STK",
                                    position=held.position, market_price=und.price,
                                    market_value=und.price * held.position, source="batch",
                                    event_time=event_time))  # fmt: skip
            continue
        quote = black_scholes(und.price, contract.strike, years_to_expiry(contract.expiry), und.volatility,
                              contract.right)  # fmt: skip
        value = quote.price * held.position * 100
        common = dict(account=account, conid=conid, symbol=contract.symbol, right=contract.right,
                      strike=contract.strike, expiry=contract.expiry, position=held.position,
                      market_price=quote.price, market_value=value, average_cost=held.avg_cost,
                      unrealized_pnl=value - held.avg_cost * held.position,
                      event_time=event_time)  # fmt: skip
        if held.strategy_id is not None:
            rows.append(PositionRow(**common, delta=quote.delta, gamma=quote.gamma, vega=quote.vega,
                                    theta=quote.theta, underlying_price=und.price, source="stream",
                                    multiplier=100.0, prior_close=quote.price * 0.9,
                                    daily_pnl=quote.price * 0.1 * held.position * 100))  # fmt: skip
        else:
            rows.append(PositionRow(**common, source="batch", daily_pnl=-1.0))
    return rows


@pytest.fixture
def demo_lake(lake_root: str):
    book = load_book("demo")
    register_demo_legs(lake_root, book=book)
    return book, lake_root


def lake_risk(lake_root: str, now: datetime = NOW):
    registry = StrategyRegistry(lake_root).all_legs()
    return compute_risk(read_positions(lake_root), registry, now, STALE_AFTER_S)


def test_iron_condor_rows_are_the_sums_of_their_legs(demo_lake):
    book, lake_root = demo_lake
    write_rows(lake_root, "streamed_positions", demo_rows(book))
    snapshot = lake_risk(lake_root)
    positions = read_positions(lake_root)
    condors = {1: "SPY", 2: "QQQ", 3: "IWM"}
    for strategy_id, symbol in condors.items():
        legs = [
            row
            for row in positions.iter_rows(named=True)
            if book.positions[(DEMO_ACCOUNT, row["conid"])].strategy_id == strategy_id
        ]
        assert len(legs) == 4
        # By hand: greek x position x multiplier (100), short legs negative; dollar delta x the spot.
        delta = sum(leg["delta"] * leg["position"] * 100 for leg in legs)
        expected = {
            "delta": delta,
            "dollar_delta": sum(
                leg["delta"] * leg["position"] * 100 * leg["underlying_price"] for leg in legs
            ),
            "gamma": sum(leg["gamma"] * leg["position"] * 100 for leg in legs),
            "theta": sum(leg["theta"] * leg["position"] * 100 for leg in legs),
            "vega": sum(leg["vega"] * leg["position"] * 100 for leg in legs),
            "market_value": sum(leg["market_value"] for leg in legs),
            "unrealized_pnl": sum(leg["unrealized_pnl"] for leg in legs),
            "daily_pnl": sum(
                (leg["market_price"] - leg["prior_close"]) * leg["position"] * 100 for leg in legs
            ),
        }
        row = snapshot.strategies.filter(pl.col("strategy_id") == strategy_id).row(0, named=True)
        assert row["account"] == DEMO_ACCOUNT and row["symbols"] == symbol
        assert (row["legs"], row["legs_held"], row["legs_missing"], row["legs_stale"]) == (4, 4, 0, 0)
        assert row["legs_with_greeks"] == 4
        for name, value in expected.items():
            assert row[name] == pytest.approx(value, rel=1e-9), name
        # An iron condor is short premium: short vega, long theta; the short strikes dominate the wings.
        assert row["vega"] < 0 < row["theta"]
        assert row["gamma"] < 0

    # Signs of single legs: the short call (qty -1, delta > 0) is short shares; the short put is long shares.
    legs = snapshot.positions.filter(pl.col("strategy_id") == 1).sort("strike")
    long_put, short_put, short_call, long_call = legs.iter_rows(named=True)
    assert short_call["position"] == -1 and short_call["delta"] < 0 and short_call["dollar_delta"] < 0
    assert short_put["position"] == -1 and short_put["delta"] > 0
    assert long_put["delta"] < 0 < long_call["delta"]
    assert short_call["multiplier"] == 100.0


def test_underlying_rows_cover_every_position_with_coverage_by_source(demo_lake):
    book, lake_root = demo_lake
    write_rows(lake_root, "queued_positions", demo_rows(book))
    snapshot = lake_risk(lake_root)
    underlyings = snapshot.underlyings
    assert underlyings["positions"].sum() == len(book.positions)
    spy = underlyings.filter(pl.col("underlying") == "SPY").row(0, named=True)
    spy_rows = snapshot.positions.filter(pl.col("symbol") == "SPY")
    # Greeks: the 4 streamed condor legs (IB), the SPY stock (delta one), and the queued options from the
    # model (their mark and the legs' underlying price), but one whose mark sits at its no-arbitrage floor.
    queued = spy_rows.filter(pl.col("strategy_id").is_null() & (pl.col("sec_type") == "OPT"))
    modelled = queued.filter(pl.col("greeks_source") == "model").height
    assert spy["positions_greeks_ib"] == 4 and spy["positions_greeks_delta_one"] == 1
    assert spy["positions_greeks_model"] == modelled >= queued.height - 2
    assert spy["positions_with_greeks"] == 5 + modelled
    assert spy["abs_market_value"] == pytest.approx(spy_rows["market_value"].abs().sum())
    with_greeks = spy_rows.filter(pl.col("greeks_source").is_not_null())["market_value"].abs().sum()
    assert spy["coverage"] == pytest.approx(with_greeks / spy["abs_market_value"])
    # The stock counts its shares one for one: 10 SPY shares = 10 deltas, in dollars at its price.
    stock = spy_rows.filter(pl.col("sec_type") == "STK").row(0, named=True)
    assert (stock["delta"], stock["multiplier"]) == (10.0, 1.0)
    assert stock["dollar_delta"] == pytest.approx(10 * 580.0)
    # A queued option has no greeks from IB (model ones, or none), and carries IB's daily P&L.
    assert set(queued["greeks_source"].drop_nulls()) == {"model"} and set(queued["daily_pnl"]) == {-1.0}
    total = coverage(underlyings)
    assert total is not None and 0 < total < 1


def test_a_closed_or_stale_leg_shows_on_its_strategy(demo_lake):
    book, lake_root = demo_lake
    rows = demo_rows(book, minutes_ago={900000006: 10.0})  # a QQQ leg last seen 10 minutes ago
    write_rows(lake_root, "streamed_positions", rows)
    closed = next(r for r in rows if r.conid == 900000001)  # the SPY condor's long put wing
    write_rows(lake_root, "streamed_positions", [PositionRow(
        account=closed.account, conid=closed.conid, symbol="SPY", right="P", strike=closed.strike,
        expiry=closed.expiry, position=0.0, source="portfolio", event_time=NOW)])  # fmt: skip
    strategies = lake_risk(lake_root).strategies.sort("strategy_id")
    assert strategies.select("strategy_id", "legs_held", "legs_missing", "legs_stale").rows() == [
        (1, 3, 1, 0),
        (2, 4, 0, 1),
        (3, 4, 0, 0),
    ]
    assert strategies.filter(pl.col("strategy_id") == 2)["max_leg_age_s"][0] == pytest.approx(600, abs=5)


def test_a_strategy_held_nowhere_has_one_row_without_account():
    legs = pl.DataFrame(
        {"conid": [1, 2], "strategy_id": [7, 7], "symbol": ["SPY", "SPY"], "multiplier": [100.0, 100.0]}
    )
    book = read_positions("/nonexistent-lake-root")  # no table yet: an empty book of the declared schema
    risk = position_risk(book, legs, NOW)
    rows = strategy_risk(risk, legs, NOW, STALE_AFTER_S)
    assert rows.select("account", "strategy_id", "legs", "legs_held", "legs_missing").rows() == [
        (None, 7, 2, 0, 2)
    ]
    assert underlying_risk(risk, NOW).is_empty()


def test_multiplier_comes_from_the_row_the_registry_or_ib_valuation():
    book = pl.DataFrame(
        {
            "account": ["A"] * 4, "conid": [1, 2, 3, 4], "symbol": ["ES"] * 4,
            "sec_type": ["FOP", "FOP", "FOP", "OPT"], "right": ["C"] * 4, "strike": [6000.0] * 4,
            "expiry": ["20261218"] * 4, "position": [2.0, 2.0, 2.0, 2.0], "market_price": [10.0] * 4,
            "market_value": [1000.0, 1000.0, 1000.0, None], "unrealized_pnl": [None] * 4,
            "delta": [0.5] * 4, "gamma": [0.01] * 4, "vega": [1.0] * 4, "theta": [-1.0] * 4,
            "underlying_price": [6000.0] * 4, "source": ["stream"] * 4, "event_time": [NOW] * 4,
            "multiplier": [20.0, None, None, None], "prior_close": [None] * 4, "daily_pnl": [None] * 4,
        }
    )  # fmt: skip
    legs = strategy_legs(
        pl.DataFrame(
            {"conid": [2], "symbol": ["ES"], "multiplier": [50], "strategy_id": [1], "active": [True]}
        )
    )
    risk = position_risk(book, legs, NOW).sort("conid")
    # The row's own; the registry's; implied by IB's valuation (1000 / (10 x 2)); the option default.
    assert risk["multiplier"].to_list() == [20.0, 50.0, 50.0, 100.0]
    assert risk["delta"].to_list() == [20.0, 50.0, 50.0, 100.0]  # 0.5 x 2 x multiplier
    assert risk["dollar_delta"][0] == pytest.approx(20.0 * 6000.0)
