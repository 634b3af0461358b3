"""Risk in Dagster: the refresh job on the demo book streamed from the simulator, its checks, limits, and a
backfill of `book_eod` for two past days from history alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
import pytest
from defs_helpers import stream_then_batch

from v6_positions.commands.launch import register_demo_legs
from v6_positions.config import Settings
from v6_positions.definitions import build_definitions
from v6_positions.defs.risk.checks import RiskLimits, StrategyLimit
from v6_positions.defs.risk.schedules import EOD_JOB_NAME, RISK_JOB_NAME
from v6_positions.lake.history import write_rows
from v6_positions.lake.positions import read_positions
from v6_positions.lake.registry import StrategyRegistry
from v6_positions.lake.rows import PositionRow
from v6_positions.lake.tables import read_table
from v6_positions.risk.eod import close_time
from v6_positions.simulator.demo_books import DEMO_ACCOUNT

CONDORS = {1: "SPY", 2: "QQQ", 3: "IWM"}


def refresh(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.ExecuteInJobResult:
    result = defs.resolve_job_def(RISK_JOB_NAME).execute_in_process(instance=instance, raise_on_error=True)
    assert result.success
    return result


def checks(result: dg.ExecuteInJobResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def metadata(result: dg.ExecuteInJobResult, asset: str) -> dict[str, dg.MetadataValue]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return event.materialization.metadata


@pytest.mark.timeout(180)
def test_risk_of_the_demo_book_streamed_and_batched(sim, make_defs, instance, lake_root):
    register_demo_legs(lake_root)
    defs = make_defs(sim.port)
    stream_then_batch(defs, instance, sim.port, stream_s=10.0)

    result = refresh(defs, instance)
    book = read_positions(lake_root)
    strategies = read_table(lake_root, "strategy_risk")
    registry = StrategyRegistry(lake_root).all_legs()
    for strategy_id, symbol in CONDORS.items():
        conids = registry.filter(pl.col("strategy_id") == strategy_id)["conid"].to_list()
        legs = list(book.filter(pl.col("conid").is_in(conids)).iter_rows(named=True))
        assert len(legs) == 4 and all(leg["source"] == "stream" and leg["delta"] is not None for leg in legs)
        # By hand from the legs in `positions`: greek x position x 100, dollar delta at the leg's spot, and
        # the daily P&L from IB's close tick.
        expected = {
            "delta": sum(leg["delta"] * leg["position"] * 100 for leg in legs),
            "dollar_delta": sum(
                leg["delta"] * leg["position"] * 100 * leg["underlying_price"] for leg in legs
            ),
            "theta": sum(leg["theta"] * leg["position"] * 100 for leg in legs),
            "vega": sum(leg["vega"] * leg["position"] * 100 for leg in legs),
            "gamma": sum(leg["gamma"] * leg["position"] * 100 for leg in legs),
            "market_value": sum(leg["market_value"] for leg in legs),
            "daily_pnl": sum(
                (leg["market_price"] - leg["prior_close"]) * leg["position"] * 100 for leg in legs
            ),
        }
        row = strategies.filter(pl.col("strategy_id") == strategy_id).row(0, named=True)
        assert (row["account"], row["symbols"], row["legs_held"], row["legs_missing"]) == (
            DEMO_ACCOUNT, symbol, 4, 0
        )  # fmt: skip
        for name, value in expected.items():
            assert row[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
        assert row["vega"] < 0 < row["theta"]  # short premium

    # Queued options carry IB's dailyPnL (reqPnLSingle); streamed legs their prior close.
    queued = book.filter(pl.col("source") == "batch")
    assert queued.filter(pl.col("sec_type") == "OPT")["daily_pnl"].null_count() == 0
    assert book.filter(pl.col("source") == "stream")["prior_close"].null_count() == 0

    # Every position is in underlying_risk; greeks cover the streamed legs and the stocks.
    underlyings = read_table(lake_root, "underlying_risk")
    assert underlyings["positions"].sum() == book.height
    assert underlyings["positions_greeks_ib"].sum() == 12
    assert underlyings["positions_greeks_delta_one"].sum() == book.filter(pl.col("sec_type") == "STK").height
    assert read_table(lake_root, "underlying_risk_history").height == underlyings.height

    # Numbers for the Plots tab, a table of the riskiest rows.
    shown = metadata(result, "strategy_risk")
    assert isinstance(shown["total_dollar_delta"], dg.FloatMetadataValue)
    assert shown["total_dollar_delta"].value == pytest.approx(strategies["dollar_delta"].sum(), abs=0.01)
    assert "| account | strategy_id |" in shown["riskiest"].value
    under = metadata(result, "underlying_risk")
    assert 0 < under["coverage_pct"].value <= 100

    evaluations = checks(result)
    assert evaluations["strategy_legs_held_and_fresh"].passed
    assert evaluations["strategy_risk_limits"].passed  # no limits configured
    # IB's greeks for the streamed legs, model greeks for the queued options (test_defs_model_greeks.py): the
    # check holds the share to the default 90 %, and warns below it.
    assert evaluations["risk_coverage"].passed == (under["coverage_pct"].value >= 90.0)
    assert evaluations["risk_coverage"].severity == dg.AssetCheckSeverity.WARN

    # A second refresh adds a second set of rows to the history and replaces the snapshot.
    refresh(defs, instance)
    assert read_table(lake_root, "strategy_risk").height == strategies.height
    assert read_table(lake_root, "strategy_risk_history")["as_of"].n_unique() == 2


def condor(
    event_time: datetime, positions: tuple[float, ...] = (1, -1, -1, 1), first_conid: int = 900000001
) -> list[PositionRow]:
    """A SPY condor (conids first_conid.. +3) as streamed rows at `event_time`."""
    legs = (("P", 540.0, 0.10), ("P", 550.0, 0.20), ("C", 610.0, 0.20), ("C", 620.0, 0.10))
    return [
        PositionRow(account=DEMO_ACCOUNT, conid=first_conid + i, symbol="SPY", right=right, strike=strike,
                    expiry="20271217", position=size, market_price=price, market_value=price * size * 100,
                    delta=0.2 if right == "C" else -0.2, gamma=0.01, vega=0.5, theta=-0.1,
                    underlying_price=580.0, multiplier=100.0, source="stream",
                    event_time=event_time)  # fmt: skip
        for i, ((right, strike, price), size) in enumerate(zip(legs, positions, strict=True))
    ]


def register_condor(lake_root: str, strategy_id: int = 1, first_conid: int = 900000001) -> None:
    registry = StrategyRegistry(lake_root)
    for row in condor(datetime.now(UTC), first_conid=first_conid):
        registry.add_active(row.conid, "SPY", row.right, row.strike, row.expiry, strategy_id)


def test_a_strategy_with_a_closed_or_stale_leg_fails_its_check(make_defs, instance, lake_root):
    register_condor(lake_root)
    defs = make_defs()
    write_rows(lake_root, "streamed_positions", condor(datetime.now(UTC)))
    assert checks(refresh(defs, instance))["strategy_legs_held_and_fresh"].passed

    # A second condor whose short put was last refreshed 6 minutes ago (freshness window: 300 s): stale.
    register_condor(lake_root, strategy_id=2, first_conid=900000101)
    rows = condor(datetime.now(UTC), first_conid=900000101)
    rows[1].event_time = datetime.now(UTC) - timedelta(minutes=6)
    write_rows(lake_root, "queued_positions", rows)
    evaluation = checks(refresh(defs, instance))["strategy_legs_held_and_fresh"]
    assert not evaluation.passed
    assert evaluation.metadata["incomplete"].value == f"strategy 2 in {DEMO_ACCOUNT}: 0 missing, 1 stale"

    # The first condor's short call is closed: that strategy misses a leg.
    (closed,) = [row for row in condor(datetime.now(UTC), (1, -1, 0, 1)) if row.position == 0]
    write_rows(lake_root, "streamed_positions", [closed])
    evaluation = checks(refresh(defs, instance))["strategy_legs_held_and_fresh"]
    assert not evaluation.passed
    assert evaluation.metadata["incomplete"].value == (
        f"strategy 1 in {DEMO_ACCOUNT}: 1 missing, 0 stale, strategy 2 in {DEMO_ACCOUNT}: 0 missing, 1 stale"
    )
    assert evaluation.metadata["strategies_incomplete"].value == 2


def test_strategy_limits_warn_when_exceeded(lake_root, instance):
    register_condor(lake_root)
    # One short call more than long: dollar delta 0.2 x -1 x 100 x 580 = -11,600; vega 0.5 x -1 x 100 = -50.
    write_rows(lake_root, "streamed_positions", condor(datetime.now(UTC), (10, -10, -11, 10)))
    limits = RiskLimits(max_abs_vega=1_000.0, per_strategy={"1": StrategyLimit(max_abs_dollar_delta=5_000.0)})
    defs = build_definitions(Settings(lake_uri=lake_root), risk_limits=limits)
    evaluation = checks(refresh(defs, instance))["strategy_risk_limits"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert (evaluation.metadata["limits_checked"].value, evaluation.metadata["breaches"].value) == (2, 1)
    assert "|dollar_delta| 11,600 > 5,000" in evaluation.metadata["breaching"].value


def test_book_eod_backfill_of_two_past_days_from_history(make_defs, instance, lake_root):
    register_condor(lake_root)
    today = datetime.now(UTC).date()
    day1, day2 = today - timedelta(days=3), today - timedelta(days=2)
    # Day 1: the condor opens in the morning and is repriced after the close (not part of day 1's book).
    write_rows(lake_root, "streamed_positions", condor(close_time(day1) - timedelta(hours=5)))
    after_close = condor(close_time(day1) + timedelta(minutes=30), (2, -2, -2, 2))
    write_rows(lake_root, "streamed_positions", after_close)
    # Day 2: the long call wing is closed before the close.
    write_rows(lake_root, "queued_positions", [r for r in condor(close_time(day2) - timedelta(hours=1),
               (2, -2, -2, 0)) if r.conid == 900000004])  # fmt: skip
    defs = make_defs()
    result = defs.resolve_job_def(EOD_JOB_NAME).execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": day1.isoformat(),
            "dagster/asset_partition_range_end": day2.isoformat(),
        },
    )
    assert result.success
    book = read_table(lake_root, "book_eod").sort("eod_date", "conid")
    sizes = {
        d: dict(zip(frame["conid"].to_list(), frame["position"].to_list(), strict=True))
        for (d,), frame in book.group_by("eod_date")
    }
    assert sizes == {
        day1: {900000001: 1.0, 900000002: -1.0, 900000003: -1.0, 900000004: 1.0},
        day2: {900000001: 2.0, 900000002: -2.0, 900000003: -2.0},
    }
    strategies = read_table(lake_root, "strategy_risk_eod").sort("eod_date")
    assert strategies.select("eod_date", "legs_held", "legs_missing").rows() == [(day1, 4, 0), (day2, 3, 1)]
    # By hand: day 1 = puts -0.2 x (1 - 1) x 100 + calls 0.2 x (-1 + 1) x 100 = 0; day 2 = the short call
    # left alone on the call side: 0.2 x -2 x 100 = -40.
    assert strategies["delta"].to_list() == pytest.approx([0.0, -40.0])
    underlyings = read_table(lake_root, "underlying_risk_eod")
    assert underlyings.select("eod_date", "positions").sort("eod_date").rows() == [(day1, 4), (day2, 3)]
    # Both partitions reported; building a day again replaces it (no duplicates).
    materialized = instance.get_materialized_partitions(dg.AssetKey("book_eod"))
    assert {day1.isoformat(), day2.isoformat()} <= set(materialized)
    defs.resolve_job_def(EOD_JOB_NAME).execute_in_process(instance=instance, partition_key=day2.isoformat())
    assert read_table(lake_root, "book_eod").height == book.height
    rebuilt = read_table(lake_root, "book_eod").filter(pl.col("eod_date") == day2)
    assert rebuilt["close_time"].unique().to_list() == [close_time(day2)]
