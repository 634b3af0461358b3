"""The current book: one row per (account, conid), the newest observation from the stream or the batch.

Kept current incrementally: every history append (the stream's flush, the batch's `write_rows`) MERGEs its
newest row per contract into `positions`, so the book never needs a read of history; book_heal.py brings in
whatever a writer appended but could not merge (a failed merge, a crash in between). A stored row is
replaced only by a newer event (an equal event_time written later also wins), so commits may arrive in any
order and the book still equals the newest open row per contract of the whole history.

A close (position 0) stays in the table as a tombstone: an older event that commits later (a batch fetch
that raced the close) must not resurrect it. `read_positions` hides tombstones; maintenance purges old ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import polars as pl
from deltalake import CommitProperties, DeltaTable, Transaction

from v6_positions.lake.errors import LakeSchemaError
from v6_positions.lake.properties import ensure_properties
from v6_positions.lake.rows import PositionRow, history_frame, validated_records
from v6_positions.lake.schemas import POSITIONS, STREAMED_POSITIONS
from v6_positions.lake.tables import (
    TableHandle,
    conform,
    read_table,
    retry_on_conflict,
)

log = logging.getLogger(__name__)

# Compact `positions` once a merge leaves more live files than this: reads stay one or two files.
COMPACT_ABOVE_FILES = 8
# Every merge rewrites the files it touches; a long-lived writer vacuums the replaced ones this often
# (older than the table's 15-minute deletedFileRetentionDuration), so the directory stays bounded.
VACUUM_EVERY_MERGES = 900

_CREATE_ATTEMPTS = 6  # ~0.6 s of waiting for a concurrent creator
_KEYS = ["account", "conid"]
_ORDER = ["event_time", "written_at"]
_NEWER = (
    "s.event_time > t.event_time OR (s.event_time = t.event_time AND "
    "(t.written_at IS NULL OR s.written_at >= t.written_at))"
)
_KEY_MATCH = "t.account = s.account AND t.conid = s.conid"


def _open(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows of held positions: 0 means closed; a row whose position is unknown (null) is kept."""
    return frame.filter(pl.col("position").is_null() | (pl.col("position") != 0))


def newest_per_contract(history: pl.DataFrame) -> pl.DataFrame:
    """Newest row per (account, conid) by event_time, then written_at; on a full tie the later row wins.

    The newest row wins as a whole, so every field of a book row comes from one observation and its
    `source` and `age_s` describe all of it."""
    return (
        history.sort(_ORDER, nulls_last=False, maintain_order=True)
        .group_by(_KEYS, maintain_order=True)
        .last()
    )


def _with_age(frame: pl.DataFrame, now: datetime) -> pl.DataFrame:
    return conform(
        frame.with_columns(
            age_s=(pl.lit(now) - pl.col("event_time")).dt.total_microseconds() / 1e6,
            refreshed_at=pl.lit(now),
        ),
        POSITIONS,
    )


class PositionsBook:
    """`positions` as one writer sees it: a cached table handle and the merge of new history rows.

    Not thread-safe (the owner serialises its flushes); separate books in separate threads or processes
    may merge at once: a lost commit race is re-run against the winner's version, so nothing is lost.
    """

    def __init__(
        self,
        root_uri: str,
        storage_options: dict[str, str] | None = None,
        vacuum_every: int = VACUUM_EVERY_MERGES,
    ) -> None:
        self._handle = TableHandle(root_uri, POSITIONS.name, storage_options)
        self.vacuum_every = vacuum_every
        self.vacuumed = 0
        self._properties_checked = False
        self.merges = 0
        self.compactions = 0

    def _table(self) -> DeltaTable:
        table = self._created_or_opened()
        if not self._properties_checked:
            ensure_properties(table, POSITIONS)
            self._properties_checked = True
        return table

    def _created_or_opened(self) -> DeltaTable:
        # The stream and the batch may both create `positions` on their first write; while the other one's
        # first commit is in flight the directory looks like a broken table. Wait for it, briefly.
        for attempt in range(_CREATE_ATTEMPTS):
            try:
                return self._handle.latest(create=True)
            except LakeSchemaError:
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
                time.sleep(0.02 * 2**attempt)
        raise AssertionError("unreachable")

    def apply(self, history: pl.DataFrame, watermarks: Mapping[str, int] | None = None) -> int:
        """Merge history-shaped rows (with written_at); returns book rows inserted or updated.

        `watermarks` (app id -> version) are committed with the merge, atomically: book_heal.py's record of
        which history versions the book holds."""
        if history.is_empty():
            return 0
        source = _with_age(newest_per_contract(history), datetime.now(UTC))
        commit = None
        if watermarks:
            commit = CommitProperties(
                app_transactions=[Transaction(app_id, version) for app_id, version in watermarks.items()]
            )

        def merge() -> tuple[int, DeltaTable]:
            table = self._table()
            metrics = (
                table.merge(
                    source, predicate=_KEY_MATCH, source_alias="s", target_alias="t", commit_properties=commit
                )
                .when_matched_update_all(predicate=_NEWER)
                .when_not_matched_insert_all()
                .execute()
            )
            changed = int(metrics["num_target_rows_inserted"]) + int(metrics["num_target_rows_updated"])
            return changed, table  # the merge left `table` at its own commit: no reload to look at files

        changed, table = retry_on_conflict(merge, what=f"positions merge of {source.height} rows")
        self.merges += 1
        self._compact_if_fragmented(table)
        if self.vacuum_every and self.merges % self.vacuum_every == 0:
            self._vacuum(table)
        return changed

    def _vacuum(self, table: DeltaTable) -> None:
        try:  # best effort, like compaction: maintenance vacuums on its schedule anyway
            removed = table.vacuum(retention_hours=None, dry_run=False, enforce_retention_duration=True)
        except Exception as exc:
            log.warning("positions: vacuum failed (maintenance will retry): %s", exc)
            return
        self.vacuumed += len(removed)

    def _compact_if_fragmented(self, table: DeltaTable) -> None:
        if len(table.file_uris()) <= COMPACT_ABOVE_FILES:
            return
        try:  # best effort: a concurrent merge may win the race; the next merge tries again
            table.optimize.compact()
        except Exception as exc:
            log.warning("positions: compaction failed (the next merge retries): %s", exc)
            return
        self.compactions += 1

    def watermarks(self, app_ids: Iterable[str]) -> dict[str, int]:
        """The history versions `positions` holds (book_heal.py), by app id; absent ones left out."""
        table = self._handle.latest(create=False)
        if table is None:
            return {}
        found = {app_id: table.transaction_version(app_id) for app_id in app_ids}
        return {app_id: int(version) for app_id, version in found.items() if version is not None}


def apply_to_positions(
    root_uri: str, rows: Iterable[PositionRow], storage_options: dict[str, str] | None = None
) -> int:
    """Merge the newest of `rows` per (account, conid) into `positions` (one commit); returns rows changed.

    History writers call this themselves after their append; call it directly only to replay rows.
    """
    records = validated_records(POSITIONS.name, rows)
    if not records:
        return 0
    frame = history_frame(records, STREAMED_POSITIONS, datetime.now(UTC))
    return PositionsBook(root_uri, storage_options).apply(frame)


def read_positions(root_uri: str, storage_options: dict[str, str] | None = None) -> pl.DataFrame:
    """The book: open positions, one row per (account, conid)."""
    return _open(read_table(root_uri, POSITIONS.name, storage_options))
