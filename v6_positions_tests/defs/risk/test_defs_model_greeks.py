"""Greeks for every option at zero lines, in Dagster: on the demo book streamed from the simulator, the
queued options get model greeks, the underlyings nothing else prices get a historical close, and
`underlying_risk` counts coverage from IB and from the model."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import polars as pl
import pytest
from defs_helpers import stream_then_batch

from v6_positions.commands.launch import DEMO_STEP_MINUTES, DEMO_TICK_INTERVAL_S, register_demo_legs
from v6_positions.defs.risk.schedules import RISK_JOB_NAME
from v6_positions.lake.history import write_rows
from v6_positions.lake.positions import read_positions
from v6_positions.lake.rows import PositionRow
from v6_positions.lake.tables import read_table
from v6_positions.risk.model_greeks import DEFAULT_RATE, price_bounds, with_model_greeks, years_to_expiry
from v6_positions.risk.underlying_prices import with_underlying_prices
from v6_positions.simulator import SimulatorThread, load_book


def _metadata(result: dg.ExecuteInJobResult, asset: str) -> dict[str, object]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return {name: getattr(value, "value", value) for name, value in event.materialization.metadata.items()}


@pytest.mark.timeout(180)
def test_queued_options_get_model_greeks_and_coverage_counts_ib_and_model(make_defs, instance, lake_root):
    # The market walks at its real pace (a minute per minute): a queued option's mark and its underlying's
    # price, taken seconds apart, then describe the same market (`simulate`'s default walks a minute per
    # 0.25 s, and deep in-the-money marks fall below their floor at a spot seconds newer).
    with SimulatorThread(load_book("demo"), portfolio_interval=2.0, tick_interval=60.0) as sim:
        register_demo_legs(lake_root)
        defs = make_defs(sim.port)
        stream_then_batch(defs, instance, sim.port)

        risk = defs.resolve_job_def(RISK_JOB_NAME).execute_in_process(instance=instance, raise_on_error=True)
        book = read_positions(lake_root)
        options = book.filter(pl.col("sec_type") == "OPT")
        queued = options.filter(pl.col("source") == "batch").height
        # SPY, QQQ, IWM are priced by their streamed condor legs, AAPL, MSFT, NVDA by the held stock: only
        # AMZN and TSLA need a historical bar, one each, within IB's pacing.
        closes = _metadata(risk, "underlying_closes")
        assert sorted(closes["closes"]) == ["AMZN", "TSLA"]
        assert all(entry["close"] > 0 for entry in closes["closes"].values())
        assert (closes["requested"], closes["answered"], closes["deferred_by_pacing"]) == (2, 2, 0)
        assert sim.stats()["historical_requests"] == 2 and sim.stats()["historical_pacing_violations"] == 0

        under = read_table(lake_root, "underlying_risk")
        shown = _metadata(risk, "underlying_risk")
        assert under["positions_greeks_ib"].sum() == options.height - queued == 12
        modelled = under["positions_greeks_model"].sum()
        assert modelled == shown["model_greeks"] and shown["model_greeks_missing"] == queued - modelled
        assert modelled >= 0.95 * queued
        coverage = under["abs_market_value_with_greeks"].sum() / under["abs_market_value"].sum()
        assert coverage >= 0.95 and shown["coverage_pct"] == pytest.approx(100 * coverage, abs=0.01)
        # What has no greeks is nothing invented: only marks below their no-arbitrage floor by more than the
        # at-intrinsic tolerance (the simulator's clock to expiry differs a little from ours; a mark just
        # under its floor is read as intrinsic value, model_greeks_at_intrinsic).
        assert set(shown["model_greeks_missing_by_reason"]) <= {"outside_bounds"}
        closes_now = {symbol: entry["close"] for symbol, entry in closes["closes"].items()}
        frame = with_model_greeks(with_underlying_prices(book, closes_now), now=datetime.now(UTC)).frame
        missing = frame.filter((pl.col("sec_type") == "OPT") & pl.col("greeks_source").is_null())
        years = missing.select(years_to_expiry(pl.col("expiry"), datetime.now(UTC)))["expiry"].to_numpy()
        floor, _ = price_bounds(missing["underlying_price"].to_numpy(), missing["strike"].to_numpy(), years,
                                (missing["right"] == "C").to_numpy(), DEFAULT_RATE, DEFAULT_RATE)  # fmt: skip
        assert np.all(missing["market_price"].to_numpy() <= floor + 0.01)

        # A minute later: the closes are fresh, so the gateway is not asked again.
        again = defs.resolve_job_def(RISK_JOB_NAME).execute_in_process(instance=instance, raise_on_error=True)
        assert _metadata(again, "underlying_closes")["requested"] == 0
        assert sorted(_metadata(again, "underlying_closes")["closes"]) == ["AMZN", "TSLA"]
        assert sim.stats()["historical_requests"] == 2


def _refresh_once(defs: dg.Definitions, instance: dg.DagsterInstance, port: int) -> dg.ExecuteInJobResult:
    """What the demo does every minute: the stream (a few seconds of it), the queued positions' batch, the
    risk refresh."""
    stream_then_batch(defs, instance, port)
    return defs.resolve_job_def(RISK_JOB_NAME).execute_in_process(instance=instance, raise_on_error=True)


@pytest.mark.timeout(240)
def test_the_demo_at_its_market_pace_keeps_risk_coverage_near_the_whole_book(make_defs, instance, lake_root):
    # The simulator as `v6-positions demo` runs it (its tick and its market's pace); twice the stream, the
    # batch and the risk refresh: the marks, the streamed legs' underlying prices, the stocks' and the bars'
    # are each of their own moment, and yet every refresh has greeks (IB's or the model's) for >= 95 % of
    # the book's |market value|. (The demo's own spread of marks over a sweep: risk/test_risk_coverage.py.)
    book = load_book("demo")
    with SimulatorThread(
        book, portfolio_interval=2.0, tick_interval=DEMO_TICK_INTERVAL_S, step_minutes=DEMO_STEP_MINUTES
    ) as sim:
        register_demo_legs(lake_root)
        defs = make_defs(sim.port)
        for _ in range(2):
            risk = _refresh_once(defs, instance, sim.port)
            shown = _metadata(risk, "underlying_risk")
            under = read_table(lake_root, "underlying_risk")
            coverage = under["abs_market_value_with_greeks"].sum() / under["abs_market_value"].sum()
            assert coverage >= 0.95, (coverage, shown["model_greeks_missing_by_reason"])
            options = read_positions(lake_root).filter(pl.col("sec_type") == "OPT").height
            assert options == sum(p.contract.sec_type == "OPT" for p in book.positions.values())
            with_greeks = under["positions_greeks_ib"].sum() + under["positions_greeks_model"].sum()
            assert with_greeks >= 0.95 * options
        assert sim.stats()["historical_pacing_violations"] == 0


def _closed_port() -> int:
    with socket.socket() as probe:  # a port nothing listens on once this socket is closed
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_gateway_never_fails_the_risk_refresh_and_is_not_retried_every_minute(
    make_defs, instance, lake_root
):
    expiry = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y%m%d")
    row = PositionRow(account="DU1", conid=1, symbol="AMZN", sec_type="OPT", right="C", strike=200.0,
                      expiry=expiry, position=1.0, market_price=5.0, market_value=500.0, source="batch",
                      event_time=datetime.now(UTC))  # fmt: skip
    write_rows(lake_root, "queued_positions", [row])
    defs = make_defs(_closed_port())

    first = defs.resolve_job_def(RISK_JOB_NAME).execute_in_process(instance=instance, raise_on_error=True)
    closes = _metadata(first, "underlying_closes")
    assert "ConnectionError" in closes["error"] and closes["closes"] == {} and closes["requested"] == 0
    shown = _metadata(first, "underlying_risk")
    # Nothing prices AMZN: its option gets no greeks, and says why.
    assert shown["model_greeks"] == 0 and shown["model_greeks_missing_by_reason"] == {"no_underlying": 1}
    assert read_table(lake_root, "underlying_risk")["positions_greeks_model"].sum() == 0

    again = defs.resolve_job_def(RISK_JOB_NAME).execute_in_process(instance=instance, raise_on_error=True)
    assert "error" not in _metadata(again, "underlying_closes")  # resting until GATEWAY_RETRY_AFTER_S
