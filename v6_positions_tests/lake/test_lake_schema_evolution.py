"""Tables created before a column was added (schemas.ADDED_COLUMNS) get it on first open, old rows null;
a table that differs in any other way is still refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from deltalake import DeltaTable
from lake_helpers import Lake

from v6_positions.lake.errors import LakeSchemaError
from v6_positions.lake.history import write_rows
from v6_positions.lake.positions import read_positions
from v6_positions.lake.rows import PositionRow
from v6_positions.lake.schemas import ADDED_COLUMNS, POSITIONS, STREAMED_POSITIONS
from v6_positions.lake.tables import read_table


def old_table(lake: Lake, name: str, frame: pl.DataFrame, partition_by: list[str] | None = None) -> None:
    """`frame` as the older release wrote it: without the added columns."""
    options = {"partition_by": partition_by} if partition_by else {}
    frame.drop([c for c in ADDED_COLUMNS if c in frame.columns]).write_delta(
        lake.uri(name), storage_options=lake.options, delta_write_options=options or None
    )


def test_an_older_book_and_history_get_the_new_columns_and_keep_their_rows(lake: Lake):
    earlier = datetime.now(UTC) - timedelta(minutes=5)
    row = PositionRow(account="DU1", conid=7, symbol="SPY", right="C", strike=600.0, expiry="20271217",
                      position=-1.0, market_price=2.0, source="stream", event_time=earlier)  # fmt: skip
    columns = ("account", "conid", "symbol", "right", "strike", "expiry", "position", "market_price",
               "source", "event_time")  # fmt: skip
    book_row = pl.DataFrame([{name: getattr(row, name) for name in columns}]).with_columns(
        written_at=pl.lit(earlier)
    )
    history = book_row.with_columns(event_date=pl.lit(earlier.date()))
    old_table(lake, "positions", pl.concat([POSITIONS.empty_frame(), book_row], how="diagonal_relaxed"))
    old_table(lake, "streamed_positions", pl.concat([STREAMED_POSITIONS.empty_frame(), history],
              how="diagonal_relaxed"), ["event_date"])  # fmt: skip

    book = read_positions(lake.root, lake.options)
    assert book.select("conid", "position", "multiplier", "daily_pnl").rows() == [(7, -1.0, None, None)]
    schema = DeltaTable(lake.uri("positions"), storage_options=lake.options).schema()
    assert ADDED_COLUMNS <= {field.name for field in schema.fields}

    # The writers go on as before; the new row carries the new columns.
    newer = PositionRow(account="DU1", conid=7, symbol="SPY", right="C", strike=600.0, expiry="20271217",
                        position=-1.0, market_price=2.5, prior_close=2.0, daily_pnl=-50.0, multiplier=100.0,
                        source="stream", event_time=datetime.now(UTC))  # fmt: skip
    write_rows(lake.root, "streamed_positions", [newer], lake.options)
    book = read_positions(lake.root, lake.options)
    assert book.select("market_price", "multiplier", "prior_close", "daily_pnl").rows() == [
        (2.5, 100.0, 2.0, -50.0)
    ]
    streamed = read_table(lake.root, "streamed_positions", lake.options).sort("event_time")
    assert streamed["daily_pnl"].to_list() == [None, -50.0]


def test_a_table_missing_other_columns_is_still_refused(lake: Lake):
    frame = POSITIONS.empty_frame().drop("market_price", *ADDED_COLUMNS)
    frame.write_delta(lake.uri("positions"), storage_options=lake.options)
    with pytest.raises(LakeSchemaError, match="missing columns .*'market_price'"):
        read_positions(lake.root, lake.options)
