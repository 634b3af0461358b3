"""How the position queue's writes combine with its stored rows: the source frames and the MERGEs.

Every write is one MERGE keyed by (account, conid), so re-queueing never duplicates and a retried write is
harmless. `PositionQueue` (queue.py) owns the table handle and the retries; these functions only say what
one attempt merges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

import polars as pl
from deltalake import DeltaTable

from v6_positions.lake.errors import InvalidRowError
from v6_positions.lake.rows import (
    DONE,
    FAILED,
    PENDING,
    VALUATION_FIELDS,
    Key,
    QueueItem,
    queue_item,
    validated_queue_record,
)
from v6_positions.lake.schemas import PAYLOAD_COLUMNS, POSITION_QUEUE, UTC_TIMESTAMP
from v6_positions.lake.tables import conform

_KEY_MATCH = "t.account = s.account AND t.conid = s.conid"
_KEY_SCHEMA = {"account": pl.String, "conid": pl.Int64}


def _q(column: str) -> str:
    """A quoted SQL identifier: `right`, `position`, ... are SQL keywords."""
    return f'"{column}"'


# How a re-queue combines the stored row (t) with the incoming one (s). A row that was done starts a new
# wait (new queued_at, attempts reset); a row still waiting keeps its age and its better priority.
_WAS_DONE = f"t.status = '{DONE}'"
# IB's valuation (market price and value, P&L, payload_time) is one observation: it moves as a unit, never
# column by column, so a new position can never be written with an older valuation's time. An incoming
# valuation (any of its fields) replaces the stored one; without one, the stored valuation stays only while
# the size it valued stays (a resize or a close makes it another position's value: cleared, so the batch
# fetches).
_VALUATION = tuple(VALUATION_FIELDS)
_SAME_SIZE = "(s.position IS NULL OR s.position = t.position)"
_INCOMING_VALUED = " OR ".join(f"s.{_q(c)} IS NOT NULL" for c in _VALUATION)
# An incoming None keeps the stored value of these:
_KEEP_LAST_KNOWN = (
    "right",
    "strike",
    "expiry",
    "multiplier",
    *(c for c in PAYLOAD_COLUMNS if c not in _VALUATION),
)
_UPSERT = {
    _q(column): expr
    for column, expr in {
        "symbol": "s.symbol",
        "sec_type": "s.sec_type",
        **{c: f"COALESCE(s.{_q(c)}, t.{_q(c)})" for c in _KEEP_LAST_KNOWN},
        **{
            c: f"CASE WHEN {_INCOMING_VALUED} THEN s.{_q(c)} WHEN {_SAME_SIZE} THEN t.{_q(c)} ELSE NULL END"
            for c in _VALUATION
        },
        "priority": f"CASE WHEN {_WAS_DONE} OR s.priority < t.priority THEN s.priority ELSE t.priority END",
        "status": f"'{PENDING}'",
        "attempts": f"CASE WHEN {_WAS_DONE} THEN 0 ELSE t.attempts END",
        "last_error": f"CASE WHEN {_WAS_DONE} THEN s.last_error ELSE t.last_error END",
        "queued_at": f"CASE WHEN {_WAS_DONE} THEN s.queued_at ELSE t.queued_at END",
        "updated_at": "s.updated_at",
    }.items()
}
# What marking a key done / failed sets (s.now, s.error: columns of `mark_source`).
DONE_UPDATES = {"status": f"'{DONE}'", "processed_at": "s.now", "last_error": "CAST(NULL AS STRING)"}
FAILED_UPDATES = {
    "status": f"'{FAILED}'",
    "processed_at": "s.now",
    "attempts": "t.attempts + 1",
    "last_error": "s.error",
}


def insert_source(items: Iterable[QueueItem | Mapping[str, object]], now: datetime) -> pl.DataFrame:
    """The rows to upsert, one per key; one invalid item raises InvalidRowError naming its index."""
    records = []
    for index, item in enumerate(items):
        try:
            records.append(validated_queue_record(queue_item(item), now))
        except InvalidRowError as exc:
            raise exc.at(POSITION_QUEUE.name, index) from None
    if not records:
        return POSITION_QUEUE.empty_frame()
    frame = conform(pl.DataFrame(records, infer_schema_length=None), POSITION_QUEUE)
    return conform(_dedupe(frame), POSITION_QUEUE)


def _dedupe(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per key, as if the rows had been inserted one by one in order."""
    return frame.group_by(["account", "conid"], maintain_order=True).agg(
        pl.col("symbol", "sec_type", "status", "attempts", "last_error", "processed_at", "updated_at").last(),
        *[pl.col(c).drop_nulls().last() for c in _KEEP_LAST_KNOWN],
        *[pl.col(c).last() for c in _VALUATION],  # the last row's valuation, as a unit
        pl.col("priority").min(),
        pl.col("queued_at").first(),
    )


def unique_keys(keys: Iterable[Key]) -> list[Key]:
    return list(dict.fromkeys((str(account), int(conid)) for account, conid in keys))


def key_source(keys: list[Key]) -> pl.DataFrame:
    return pl.DataFrame({"account": [k[0] for k in keys], "conid": [k[1] for k in keys]}, schema=_KEY_SCHEMA)


def mark_source(
    keys: list[Key], now: datetime, error: str | None, seen: Mapping[Key, datetime | None]
) -> pl.DataFrame:
    """The keys to mark, with the time (`now`), the error and each row's `updated_at` as it was read."""
    return key_source(keys).with_columns(
        now=pl.lit(now, UTC_TIMESTAMP),
        error=pl.lit(error, pl.String),
        seen=pl.Series([seen.get(key) for key in keys], dtype=UTC_TIMESTAMP),
    )


def seen_source(seen: Mapping[Key, datetime | None]) -> pl.DataFrame:
    """Keys with each row's `updated_at` as it was read (for a delete guarded against a change)."""
    keys = list(seen)
    return key_source(keys).with_columns(seen=pl.Series([seen[key] for key in keys], dtype=UTC_TIMESTAMP))


# A row is changed by whoever read it only if nobody re-queued it since: its `updated_at` is still the one
# read. (A time comparison would not do: a writer stamps `updated_at` before its commit, which may land
# after the reader's read, up to a retry budget later.)
_UNCHANGED = "t.updated_at = s.seen"


def merge_insert(table: DeltaTable, source: pl.DataFrame) -> None:
    (
        table.merge(source, predicate=_KEY_MATCH, source_alias="s", target_alias="t")
        .when_matched_update(updates=_UPSERT)
        .when_not_matched_insert_all()
        .execute()
    )


def merge_mark(table: DeltaTable, source: pl.DataFrame, updates: dict[str, str], guarded: bool) -> int:
    """Set `updates` on the stored rows of the source's keys; `guarded`: only rows unchanged since they
    were read (`seen`). Returns how many rows changed."""
    guard = _UNCHANGED if guarded else None
    metrics = (
        table.merge(source, predicate=_KEY_MATCH, source_alias="s", target_alias="t")
        .when_matched_update(updates={_q(c): e for c, e in updates.items()}, predicate=guard)
        .execute()
    )
    return int(metrics["num_target_rows_updated"])


def merge_delete(table: DeltaTable, source: pl.DataFrame, guarded: bool = False) -> int:
    """Delete the stored rows of the source's keys; `guarded`: only rows unchanged since read (`seen`)."""
    metrics = (
        table.merge(source, predicate=_KEY_MATCH, source_alias="s", target_alias="t")
        .when_matched_delete(predicate=_UNCHANGED if guarded else None)
        .execute()
    )
    return int(metrics["num_target_rows_deleted"])
