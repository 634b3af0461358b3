"""The book and its risk as of a day's close (16:00 New York), rebuilt from the position history alone.

The book at the close is the newest history row (stream or batch) of each (account, conid) with
event_time <= the close, within `lookback_days` before it (a position nobody refreshed for longer is not
counted), closed positions (position 0) dropped: the same rule `positions` follows live. Its risk and the
strategy / underlying rows are computed by the same functions as the live refresh, with ages at the close
and strategy membership from the registry as it is when the day is built. Only the date partitions in the
window are read, so a past day costs the same as today and a month's backfill is a month of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import polars as pl

from v6_positions.lake.positions import newest_per_contract
from v6_positions.lake.schemas import HISTORY_TABLES, POSITION_ROW_COLUMNS
from v6_positions.lake.tables import open_table
from v6_positions.risk.aggregates import strategy_risk, underlying_risk
from v6_positions.risk.position_risk import position_risk

NEW_YORK = ZoneInfo("America/New_York")
MARKET_CLOSE = time(16, 0)
DEFAULT_LOOKBACK_DAYS = 7


@dataclass(slots=True, frozen=True)
class DayClose:
    day: date
    close_time: datetime  # UTC
    book: pl.DataFrame  # position_risk rows
    strategies: pl.DataFrame
    underlyings: pl.DataFrame


def close_time(day: date) -> datetime:
    """The day's 16:00 New York close, in UTC (daylight saving included)."""
    return datetime.combine(day, MARKET_CLOSE, tzinfo=NEW_YORK).astimezone(UTC)


def book_at(
    root_uri: str,
    moment: datetime,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    storage_options: dict[str, str] | None = None,
) -> pl.DataFrame:
    """Open positions as the history says they were at `moment` (newest row per contract at or before it)."""
    if lookback_days < 1:
        raise ValueError(f"lookback_days={lookback_days}: must be >= 1")
    first = moment.date() - timedelta(days=lookback_days)
    frames = []
    for name in HISTORY_TABLES:
        table = open_table(root_uri, name, storage_options)
        if table is None:
            continue
        frames.append(
            pl.scan_delta(table)
            .filter(pl.col("event_date").is_between(first, moment.date()) & (pl.col("event_time") <= moment))
            .select(*POSITION_ROW_COLUMNS, "written_at")
            .collect()
        )
    if not frames:
        return pl.DataFrame(schema={**POSITION_ROW_COLUMNS, "written_at": POSITION_ROW_COLUMNS["event_time"]})
    newest = newest_per_contract(pl.concat(frames))
    return newest.filter(pl.col("position").is_null() | (pl.col("position") != 0)).sort("account", "conid")


def day_close(
    root_uri: str,
    day: date,
    legs: pl.DataFrame,
    stale_after_s: float,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    storage_options: dict[str, str] | None = None,
) -> DayClose:
    """The book, its position risk and the strategy / underlying rows at `day`'s close."""
    close = close_time(day)
    risk = position_risk(book_at(root_uri, close, lookback_days, storage_options), legs, close)
    return DayClose(
        day=day,
        close_time=close,
        book=risk,
        strategies=strategy_risk(risk, legs, close, stale_after_s),
        underlyings=underlying_risk(risk, close),
    )
