"""Metadata a trader looks at in the UI: counts, ages and a small table of the newest rows."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import polars as pl

_BOOK_COLUMNS = ("symbol", "right", "strike", "expiry", "position", "market_price", "source", "event_time")


def rows_markdown(
    frame: pl.DataFrame, limit: int = 10, columns: tuple[str, ...] = _BOOK_COLUMNS
) -> dg.MarkdownMetadataValue:
    """The `limit` newest rows (by event_time when present) as a markdown table."""
    if frame.is_empty():
        return dg.MetadataValue.md("_no rows_")
    if "event_time" in frame.columns:
        frame = frame.sort("event_time", descending=True, nulls_last=True)
    shown = [c for c in columns if c in frame.columns]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for row in frame.head(limit).select(shown).iter_rows():
        lines.append("| " + " | ".join(_cell(value) for value in row) + " |")
    if frame.height > limit:
        lines.append(f"\n_{limit} newest of {frame.height} rows_")
    return dg.MetadataValue.md("\n".join(lines))


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
