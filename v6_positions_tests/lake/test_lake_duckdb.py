"""An independent reader of our tables: DuckDB's delta extension (delta_scan, from the duckdb-ext-delta
package, loaded offline) reads every table after maintenance (compaction, checkpoint, vacuum) and gets the
same rows as polars.

Local lake only: DuckDB would reach moto's S3 server only through its httpfs extension and its own secrets,
which test DuckDB's S3 client rather than our tables.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import duckdb
import duckdb_ext
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from v6_positions.lake.history import write_rows
from v6_positions.lake.maintenance import maintain
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.registry import StrategyRegistry
from v6_positions.lake.rows import PositionRow, QueueItem
from v6_positions.lake.schemas import TABLES, UTC_TIMESTAMP, spec_for
from v6_positions.lake.tables import read_table, table_uri
from v6_positions.risk.eod import day_close
from v6_positions.risk.position_risk import strategy_legs
from v6_positions.risk.refresh import refresh_risk
from v6_positions.risk.store import replace_day


def duckdb_with_delta() -> duckdb.DuckDBPyConnection:
    """DuckDB with the delta extension the duckdb-ext-delta package ships: nothing is downloaded."""
    extensions = os.path.join(list(duckdb_ext.__path__)[0], "extensions")
    connection = duckdb.connect(
        config={
            "extension_directory": extensions,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
    )
    connection.load_extension("delta")
    return connection


def rows(lake_root: str) -> None:
    """Something in every table: legs, a queue, two days of history, the book, risk and a day's close."""
    registry = StrategyRegistry(lake_root)
    now = datetime.now(UTC)
    legs = [(900000001, "P", 540.0, 1.0), (900000002, "P", 550.0, -1.0), (900000003, "C", 610.0, -1.0)]
    for conid, right, strike, _ in legs:
        registry.add_active(conid, "SPY", right, strike, "20271217", 1)
    registry.deactivate(900000003)
    PositionQueue(lake_root).insert_many(
        [
            QueueItem(
                account="DU1",
                conid=910000001,
                symbol="QQQ",
                right="C",
                strike=500.0,
                expiry="20271217",
                multiplier=100,
                position=-2.0,
                market_price=3.5,
                market_value=-700.0,
                daily_pnl=12.5,
                payload_time=now,
            )
        ]  # fmt: skip
    )
    for day_offset in (1, 0):
        at = now - timedelta(days=day_offset)
        write_rows(lake_root, "streamed_positions", [
            PositionRow(account="DU1", conid=conid, symbol="SPY", right=right, strike=strike,
                        expiry="20271217", position=size, market_price=2.0 + day_offset, bid=1.9,
                        ask=2.1, delta=0.3, gamma=0.01, vega=0.4, theta=-0.05, implied_vol=0.2,
                        underlying_price=580.0, multiplier=100.0,
                        prior_close=1.8, daily_pnl=20.0 * size, event_time=at)
            for conid, right, strike, size in legs
        ])  # fmt: skip
        write_rows(lake_root, "queued_positions", [
            PositionRow(account="DU1", conid=910000001, symbol="QQQ", right="C", strike=500.0,
                        expiry="20271217", position=-2.0, market_price=3.5, market_value=-700.0,
                        daily_pnl=12.5, source="batch", event_time=at),
            PositionRow(account="DU1", conid=756733, symbol="SPY", sec_type="STK", position=10.0,
                        market_price=580.0, market_value=5800.0, source="batch", event_time=at),
        ])  # fmt: skip
        refresh_risk(lake_root, 300.0, now=at)
    yesterday = (now - timedelta(days=1)).date()
    close = day_close(lake_root, yesterday, strategy_legs(registry.all_legs()), 300.0)
    for name, frame in (("book_eod", close.book), ("strategy_risk_eod", close.strategies),
                        ("underlying_risk_eod", close.underlyings)):  # fmt: skip
        frame = frame.with_columns(close_time=pl.lit(close.close_time))
        replace_day(lake_root, spec_for(name), yesterday, frame)


def comparable(frame: pl.DataFrame, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """Timestamps as microseconds since the epoch (the two readers name the UTC zone differently)."""
    frame = frame.select(
        [pl.col(c).dt.epoch("us") if t == UTC_TIMESTAMP else pl.col(c) for c, t in columns.items()]
    )
    return frame.sort(frame.columns, nulls_last=True)


def test_every_table_reads_the_same_in_duckdb_after_maintenance(lake_root):
    rows(lake_root)
    maintained = maintain(lake_root, retention_hours=0, enforce_retention_duration=False)
    assert set(maintained) == set(TABLES)  # every table exists and was compacted, checkpointed, vacuumed
    connection = duckdb_with_delta()
    for name, spec in TABLES.items():
        ours = read_table(lake_root, name)
        assert ours.height > 0, name
        select = ", ".join(
            f'epoch_us("{c}") AS "{c}"' if t == UTC_TIMESTAMP else f'"{c}"' for c, t in spec.columns.items()
        )
        result = connection.sql(f"SELECT {select} FROM delta_scan('{table_uri(lake_root, name)}')")
        theirs = pl.DataFrame(
            result.fetchall(),
            schema={c: pl.Int64 if t == UTC_TIMESTAMP else t for c, t in spec.columns.items()},
            orient="row",
        )
        assert_frame_equal(comparable(ours, spec.columns), theirs.sort(theirs.columns, nulls_last=True))


def test_the_readme_question_in_duckdb_equals_polars(lake_root):
    """README's example: net delta, dollar delta and theta per underlying, for the newest refresh."""
    rows(lake_root)
    uri = table_uri(lake_root, "underlying_risk")
    in_polars = (
        pl.read_delta(uri)
        .group_by("underlying")
        .agg(pl.col("dollar_delta", "theta").sum())
        .sort("underlying")
        .rows()
    )
    connection = duckdb_with_delta()
    in_duckdb = connection.sql(
        f"SELECT underlying, sum(dollar_delta), sum(theta) FROM delta_scan('{uri}') "
        "GROUP BY underlying ORDER BY underlying"
    ).fetchall()
    assert in_duckdb == [(u, pytest.approx(d), pytest.approx(t)) for u, d, t in in_polars]
    assert [u for u, _, _ in in_duckdb] == ["QQQ", "SPY"]
