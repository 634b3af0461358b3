"""Metadata a trader looks at in the UI: counts, ages and a small table of the newest rows."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import dagster as dg
import polars as pl

from v6_positions.lake.history import PositionRow

BOOK_COLUMNS = ("symbol", "right", "strike", "expiry", "position", "market_price", "source", "event_time")
QUEUE_COLUMNS = ("symbol", "right", "strike", "expiry", "position", "status", "attempts", "queued_at")
REGISTRY_COLUMNS = ("conid", "symbol", "right", "strike", "expiry", "strategy_id", "updated_at")


def rows_markdown(
    frame: pl.DataFrame,
    limit: int = 10,
    columns: tuple[str, ...] = BOOK_COLUMNS,
    newest_by: str = "event_time",
) -> dg.MarkdownMetadataValue:
    """The `limit` newest rows (by `newest_by` when the frame has it; else the first) as a markdown table."""
    if frame.is_empty():
        return dg.MetadataValue.md("_no rows_")
    which = "first"
    if newest_by in frame.columns:
        frame = frame.sort(newest_by, descending=True, nulls_last=True)
        which = "newest"
    shown = [c for c in columns if c in frame.columns]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for row in frame.head(limit).select(shown).iter_rows():
        lines.append("| " + " | ".join(_cell(value) for value in row) + " |")
    if frame.height > limit:
        lines.append(f"\n_{limit} {which} of {frame.height} rows_")
    return dg.MetadataValue.md("\n".join(lines))


def position_rows_frame(rows: Iterable[PositionRow]) -> pl.DataFrame:
    """PositionRows as a frame of the book's columns (what `rows_markdown` shows)."""
    return pl.DataFrame(
        [{column: getattr(row, column) for column in BOOK_COLUMNS} for row in rows],
        schema={
            "symbol": pl.String,
            "right": pl.String,
            "strike": pl.Float64,
            "expiry": pl.String,
            "position": pl.Float64,
            "market_price": pl.Float64,
            "source": pl.String,
            "event_time": pl.Datetime("us", "UTC"),
        },
    )


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def age_seconds(moment: datetime | None, now: datetime | None = None) -> float | None:
    if moment is None:
        return None
    now = now or datetime.now(UTC)
    return round((now - moment).total_seconds(), 1)
