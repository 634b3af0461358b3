"""The current book: one row per (account, conid), the newest observation from the stream or the batch."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import polars as pl

from v6_positions.lake.schemas import HISTORY_TABLES, POSITIONS
from v6_positions.lake.tables import conform, ensure_table, read_table, retry_on_conflict

log = logging.getLogger(__name__)


def build_positions(history: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """Newest row per (account, conid) by event_time (written_at breaks ties); closed positions dropped.

    The newest row wins as a whole, so every field of a row comes from one observation and `source`
    and `age_s` describe all of it. A row whose position is unknown (null) is kept; 0 means closed.
    """
    newest = (
        history.sort(["event_time", "written_at"], nulls_last=False)
        .group_by(["account", "conid"], maintain_order=True)
        .last()
        .filter(pl.col("position").is_null() | (pl.col("position") != 0))
    )
    return conform(
        newest.with_columns(
            age_s=(pl.lit(now) - pl.col("event_time")).dt.total_microseconds() / 1e6,
            refreshed_at=pl.lit(now),
        ),
        POSITIONS,
    ).sort(["account", "conid"])


def refresh_positions(root_uri: str, storage_options: dict[str, str] | None = None) -> int:
    """Rebuild `positions` from both history tables in one overwrite commit; returns its row count."""
    history = pl.concat([read_table(root_uri, name, storage_options) for name in HISTORY_TABLES])
    book = build_positions(history, datetime.now(UTC))

    def overwrite() -> None:
        table = ensure_table(root_uri, POSITIONS.name, storage_options)
        book.write_delta(table, mode="overwrite")

    retry_on_conflict(overwrite, what=f"positions overwrite of {book.height} rows")
    log.info("positions rebuilt: %d open positions from %d history rows", book.height, history.height)
    return book.height


def read_positions(root_uri: str, storage_options: dict[str, str] | None = None) -> pl.DataFrame:
    return read_table(root_uri, POSITIONS.name, storage_options)
