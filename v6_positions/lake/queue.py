"""The position queue: contracts waiting for a batch refresh, one row per (account, conid).

`PositionQueue` owns the table: one handle shared by its methods under a lock, the table properties the
queue relies on, and the retries of a MERGE that lost a commit race (bounded, with backoff). What a write
merges lives in queue_merges.py, what a read computes in queue_reads.py, the row record in rows.py.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, date, datetime
from typing import TypeVar

import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from v6_positions.lake import queue_merges as merges
from v6_positions.lake import queue_reads as reads
from v6_positions.lake.properties import ensure_properties
from v6_positions.lake.queue_reads import Backlog
from v6_positions.lake.rows import STATUSES, Key, QueueItem
from v6_positions.lake.schemas import POSITION_QUEUE
from v6_positions.lake.tables import TableHandle, frame_of, retry_on_conflict

log = logging.getLogger(__name__)

T = TypeVar("T")


class PositionQueue:
    def __init__(
        self, root_uri: str, storage_options: dict[str, str] | None = None, max_attempts: int = 5
    ) -> None:
        self.root_uri = root_uri
        self.storage_options = storage_options
        self.max_attempts = max_attempts
        self._handle = TableHandle(root_uri, POSITION_QUEUE.name, storage_options)
        self._properties_checked = False
        self._lock = threading.Lock()  # the handle is shared by the methods of this queue

    def _table(self, *, create: bool) -> DeltaTable | None:
        """The queue at its newest version (caller holds the lock); None if absent and not `create`.

        The first open turns on what the queue relies on (change data feed, frequent checkpoints),
        also on a queue an older release created without them.
        """
        table = self._handle.latest(create=create)
        if table is not None and not self._properties_checked:
            ensure_properties(table, POSITION_QUEUE)
            self._properties_checked = True
        return table

    def _merge(self, merge: Callable[[DeltaTable], T], absent: T, *, create: bool, what: str) -> T:
        """Run one MERGE against the newest version, again when it loses a commit race; `absent` when
        there is no table (and `create` is False)."""

        def attempt() -> T:
            table = self._table(create=create)
            return absent if table is None else merge(table)

        with self._lock:
            return retry_on_conflict(attempt, what=f"position_queue {what}")

    # -- writes --------------------------------------------------------------------------------------------
    def insert_many(self, items: Iterable[QueueItem | Mapping[str, object]]) -> int:
        """Queue many contracts in ONE commit; returns the number of distinct keys written.

        Each key ends up pending with the newest payload (a None field keeps the stored value) and the
        better (lower) priority. Within the batch the last row wins. One invalid row refuses the whole
        batch (InvalidRowError naming the row index) and nothing is written. A mapping names QueueItem
        fields; the queue's own (status, attempts, times) are set by the queue.
        """
        source = merges.insert_source(items, datetime.now(UTC))
        if source.is_empty():
            return 0

        def merge(table: DeltaTable) -> None:
            merges.merge_insert(table, source)

        self._merge(merge, None, create=True, what=f"insert of {source.height} rows")
        log.debug("queued %d contracts", source.height)
        return source.height

    def mark_done(self, keys: Iterable[Key], *, as_read: Mapping[Key, datetime | None] | None = None) -> int:
        """Mark rows done; returns how many changed.

        `as_read` (what a batch read: key -> the row's `updated_at` then): only rows still exactly as read
        are marked, so a payload re-queued after the read (even one stamped before it, whose commit landed
        later) stays pending. Without it every listed row is marked.
        """
        return self._mark(keys, merges.DONE_UPDATES, None, as_read, what="mark_done")

    def mark_failed(
        self, keys: Iterable[Key], error: str, *, as_read: Mapping[Key, datetime | None] | None = None
    ) -> int:
        """Mark rows failed (attempts += 1); they are retried until attempts reaches max_attempts."""
        return self._mark(keys, merges.FAILED_UPDATES, str(error), as_read, what="mark_failed")

    def _mark(
        self,
        keys: Iterable[Key],
        updates: dict[str, str],
        error: str | None,
        as_read: Mapping[Key, datetime | None] | None,
        *,
        what: str,
    ) -> int:
        unique = merges.unique_keys(keys)
        if not unique:
            return 0
        if as_read is not None:
            missing = [key for key in unique if key not in as_read]
            if missing:
                raise ValueError(f"position_queue {what}: key={missing[0]!r} was not read (not in as_read)")
        source = merges.mark_source(unique, datetime.now(UTC), error, as_read or {})

        def merge(table: DeltaTable) -> int:
            return merges.merge_mark(table, source, updates, guarded=as_read is not None)

        return self._merge(merge, 0, create=False, what=f"{what} of {len(unique)} keys")

    def remove(self, items: Iterable[QueueItem]) -> int:
        """Delete these rows (closed or expired contracts) in one commit, each only if it is still exactly as
        read (its `updated_at`): a contract re-queued since (reopened) keeps its row. Returns rows deleted."""
        seen = {item.key: item.updated_at for item in items}
        if not seen:
            return 0

        def merge(table: DeltaTable) -> int:
            return merges.merge_delete(table, merges.seen_source(seen), guarded=True)

        removed = self._merge(merge, 0, create=False, what=f"remove of {len(seen)} keys")
        log.info("removed %d queue rows", removed)
        return removed

    # -- reads ---------------------------------------------------------------------------------------------
    def _scan(self) -> pl.LazyFrame | None:
        """A lazy scan of the current version (filters and projections are pushed into the Parquet read)."""
        with self._lock:
            table = self._table(create=False)
        return None if table is None else pl.scan_delta(table)

    def due(
        self, limit: int | None = None, *, priority: int | None = None, keys: Collection[Key] | None = None
    ) -> list[QueueItem]:
        """Due rows (pending, or failed with attempts < max_attempts): most urgent priority, then oldest.

        `limit=None` returns every due row; `keys` only those of these (account, conid). Only the rows
        asked for are materialised: the filters run in the scan.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit={limit!r}: must be >= 0 or None (all due rows)")
        scan = self._scan()
        return [] if scan is None else reads.due_items(scan, self.max_attempts, limit, priority, keys)

    def due_keys(self) -> set[Key]:
        """The keys of every due row (two columns read)."""
        scan = self._scan()
        return set() if scan is None else set(reads.keys_of(scan.filter(reads.due_filter(self.max_attempts))))

    def backlog(self) -> Backlog:
        """How many rows are due and when the oldest began waiting (aggregated in the scan)."""
        scan = self._scan()
        return Backlog(0, None) if scan is None else reads.backlog(scan, self.max_attempts)

    def closed_or_expired_items(self, today: date) -> list[QueueItem]:
        """The rows the clean-up may remove, with the contract fields that name their partitions: done with
        position 0 (closed), or expiry (YYYYMMDD) before today. A closed row that is still pending or failed
        is kept: its close has not been refreshed yet.
        """
        scan = self._scan()
        return [] if scan is None else reads.items_of(reads.closed_or_expired(scan, today))

    def changes_since(self, version: int) -> tuple[int, pl.DataFrame]:
        """(current version, rows inserted or updated by the commits after `version`), newest state per key.

        Reads the table's change data feed, so the cost follows what changed, not the queue's size. Removed
        keys are not returned. `version=-1` (or a version older than the feed: before it was enabled, or
        cleaned up by maintenance) returns every current row, once.
        """
        if version < -1:
            raise ValueError(f"version={version!r}: must be a table version >= -1")
        with self._lock:
            table = self._table(create=False)
            if table is None:
                return -1, POSITION_QUEUE.empty_frame()
            current = table.version()
            if version == current:
                return current, POSITION_QUEUE.empty_frame()
            # version > current: the table was recreated behind the cursor; a full read below resyncs it.
            if 0 <= version < current:
                try:
                    feed = table.load_cdf(starting_version=version + 1, ending_version=current)
                    return current, reads.newest_changes(pl.DataFrame(feed.read_all()))
                except DeltaError as exc:
                    log.info(
                        "position_queue: no change feed from version %d (%s); reading it all", version, exc
                    )
            return current, frame_of(table, POSITION_QUEUE).sort(["account", "conid"])

    def keys(self, status: str | None = None) -> list[Key]:
        """Every key (of rows with this status), sorted; only the key columns are read."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status={status!r}: must be one of {', '.join(STATUSES)}")
        scan = self._scan()
        if scan is None:
            return []
        scan = scan if status is None else scan.filter(pl.col("status") == status)
        return reads.keys_of(scan.sort(["account", "conid"]))
