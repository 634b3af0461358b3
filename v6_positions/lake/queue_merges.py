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
from v6_positions.lake.rows import DONE, FAILED, PENDING, Key, QueueItem, queue_item, validated_queue_record
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
# An incoming None keeps the stored value of these:
_KEEP_LAST_KNOWN = ("right", "strike", "expiry", "multiplier", *PAYLOAD_COLUMNS)
_UPSERT = {
    _q(column): expr
    for column, expr in {
        "symbol": "s.symbol",
        "sec_type": "s.sec_type",
        **{c: f"COALESCE(s.{_q(c)}, t.{_q(c)})" for c in _KEEP_LAST_KNOWN},
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
        pl.col("priority").min(),
        pl.col("queued_at").first(),
    )


def unique_keys(keys: Iterable[Key]) -> list[Key]:
    return list(dict.fromkeys((str(account), int(conid)) for account, conid in keys))


def key_source(keys: list[Key]) -> pl.DataFrame:
    return pl.DataFrame({"account": [k[0] for k in keys], "conid": [k[1] for k in keys]}, schema=_KEY_SCHEMA)


def mark_source(keys: list[Key], now: datetime, error: str | None, before: datetime) -> pl.DataFrame:
    """The keys to mark, with the time (`now`), the error and the re-queue guard's instant (`before`)."""
    return key_source(keys).with_columns(
        now=pl.lit(now, UTC_TIMESTAMP), error=pl.lit(error, pl.String), before=pl.lit(before, UTC_TIMESTAMP)
    )


def merge_insert(table: DeltaTable, source: pl.DataFrame) -> None:
    (
        table.merge(source, predicate=_KEY_MATCH, source_alias="s", target_alias="t")
        .when_matched_update(updates=_UPSERT)
        .when_not_matched_insert_all()
        .execute()
    )


def merge_mark(table: DeltaTable, source: pl.DataFrame, updates: dict[str, str], guarded: bool) -> int:
    """Set `updates` on the stored rows of the source's keys; `guarded`: only rows not re-queued since
    `before`. Returns how many rows changed."""
    guard = "t.updated_at <= s.before" if guarded else None
    metrics = (
        table.merge(source, predicate=_KEY_MATCH, source_alias="s", target_alias="t")
        .when_matched_update(updates={_q(c): e for c, e in updates.items()}, predicate=guard)
        .execute()
    )
    return int(metrics["num_target_rows_updated"])


def merge_delete(table: DeltaTable, source: pl.DataFrame) -> int:
    metrics = (
        table.merge(source, predicate=_KEY_MATCH, source_alias="s", target_alias="t")
        .when_matched_delete()
        .execute()
    )
    return int(metrics["num_target_rows_deleted"])
