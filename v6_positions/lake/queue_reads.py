"""Queries over one snapshot of the position queue, and its change feed read as "newest state per key".

The queries take a lazy scan, so their filters, projections and aggregates run inside the Parquet read:
only what a caller asks for is materialised. `PositionQueue` (queue.py) opens the snapshot.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime

import polars as pl

from v6_positions.lake.rows import DONE, FAILED, PENDING, Key, QueueItem
from v6_positions.lake.schemas import POSITION_QUEUE
from v6_positions.lake.tables import conform

# Polars counts rows in its index type (UInt32 unless built with bigidx): no frame holds more rows, so a
# larger limit asks for every row (and `head` refuses it).
_MAX_ROWS = pl.select(pl.get_index_type().max()).item()
_URGENCY = ["priority", "queued_at", "account", "conid"]


@dataclass(slots=True)
class Backlog:
    """How much waits for a batch refresh: due rows and when the oldest of them began waiting."""

    due: int
    oldest_queued_at: datetime | None


def due_filter(max_attempts: int) -> pl.Expr:
    """Rows a batch should refresh: pending, or failed with attempts left."""
    retryable = (pl.col("status") == FAILED) & (pl.col("attempts") < max_attempts)
    return (pl.col("status") == PENDING) | retryable


def due_items(
    scan: pl.LazyFrame,
    max_attempts: int,
    limit: int | None,
    priority: int | None,
    keys: Collection[Key] | None = None,
) -> list[QueueItem]:
    """Due rows (of `keys` only, when given), most urgent priority first, then oldest; at most `limit`
    (None: all)."""
    scan = scan.filter(due_filter(max_attempts))
    if priority is not None:
        scan = scan.filter(pl.col("priority") == priority)
    if keys is not None:
        wanted = pl.DataFrame(list(keys), schema={"account": pl.String, "conid": pl.Int64}, orient="row")
        scan = scan.join(wanted.lazy(), on=["account", "conid"], how="semi")
    scan = scan.sort(_URGENCY)
    if limit is not None and limit < _MAX_ROWS:
        scan = scan.head(limit)
    return items_of(scan)


def backlog(scan: pl.LazyFrame, max_attempts: int) -> Backlog:
    """The due rows' count and oldest wait, aggregated in the scan (two columns read, one row returned)."""
    row = (
        scan.select("status", "attempts", "queued_at")
        .filter(due_filter(max_attempts))
        .select(due=pl.len(), oldest=pl.col("queued_at").min())
        .collect()
        .row(0, named=True)
    )
    return Backlog(due=int(row["due"]), oldest_queued_at=row["oldest"])


def closed_or_expired(scan: pl.LazyFrame, today: date) -> pl.LazyFrame:
    """Done with position 0 (closed), or expiry (YYYYMMDD) before today; a closed row still pending or
    failed is kept: its close has not been refreshed yet."""
    closed = (pl.col("status") == DONE) & (pl.col("position") == 0)
    expired = pl.col("expiry") < today.strftime("%Y%m%d")
    return scan.filter(closed | expired).sort(["account", "conid"])


def keys_of(scan: pl.LazyFrame | pl.DataFrame) -> list[Key]:
    frame = scan.select("account", "conid")
    frame = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    return list(zip(frame["account"].to_list(), frame["conid"].to_list(), strict=True))


def items_of(scan: pl.LazyFrame | pl.DataFrame) -> list[QueueItem]:
    frame = scan.select([pl.col(c).cast(t) for c, t in POSITION_QUEUE.columns.items()])
    frame = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    return [QueueItem(**row) for row in frame.iter_rows(named=True)]


def newest_changes(feed: pl.DataFrame) -> pl.DataFrame:
    """The last change per key from a change data feed; keys whose last change is a delete are left out."""
    if feed.is_empty():
        return POSITION_QUEUE.empty_frame()
    last = (
        feed.filter(pl.col("_change_type") != "update_preimage")
        .sort("_commit_version", maintain_order=True)
        .group_by(["account", "conid"], maintain_order=True)
        .last()
        .filter(pl.col("_change_type") != "delete")
    )
    return conform(last, POSITION_QUEUE).sort(["account", "conid"])
