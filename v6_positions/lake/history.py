"""Append-only position history (streamed_positions, queued_positions), written in micro-batches.

One Delta commit per flush, never one per update: a commit costs tens of milliseconds and a file,
so the streamer buffers ticks here and flushes on a time or row bound. Every append is followed by a
merge of the same rows into `positions`, so the book is current without reading history.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from v6_positions.lake.errors import InvalidRowError, LakeError
from v6_positions.lake.positions import PositionsBook
from v6_positions.lake.properties import ensure_properties
from v6_positions.lake.rows import PositionRow, history_frame, validated_record, validated_records
from v6_positions.lake.schemas import HISTORY_TABLES, spec_for
from v6_positions.lake.tables import TableHandle, retry_on_conflict

log = logging.getLogger(__name__)

__all__ = ["HistoryWriter", "PositionRow", "WriterStats", "validated_record", "write_rows"]

Key = tuple[str, int]

# Default cap on contracts held while the lake is unreachable (one row each, a few hundred bytes).
DEFAULT_BUFFER_CAP = 100_000


def _append(handle: TableHandle, frame: pl.DataFrame) -> int:
    def write() -> None:
        table = handle.latest(create=True)
        ensure_properties(table, spec_for(handle.name))  # in memory after the first time
        frame.write_delta(table, mode="append")

    retry_on_conflict(write, what=f"{handle.name} append of {frame.height} rows")
    return frame.height


def _check_history_table(table: str) -> None:
    if table not in HISTORY_TABLES:
        raise ValueError(f"table={table!r}: history rows go to one of {', '.join(HISTORY_TABLES)}")


def write_rows(
    root_uri: str, table: str, rows: Iterable[PositionRow], storage_options: dict[str, str] | None = None
) -> int:
    """Append rows in one commit (the batch path), then merge them into `positions`; returns rows appended.

    All rows are checked first. When this returns, both the history and the book hold the rows.
    """
    _check_history_table(table)
    records = validated_records(table, rows)
    if not records:
        return 0
    frame = history_frame(records, spec_for(table), datetime.now(UTC))
    written = _append(TableHandle(root_uri, table, storage_options), frame)
    PositionsBook(root_uri, storage_options).apply(frame)
    return written


@dataclass(slots=True)
class WriterStats:
    """What a HistoryWriter holds and has lost, for the stream's status."""

    buffered: int  # contracts with a row waiting for the next flush
    held_since: datetime | None  # when the oldest unflushed row arrived (UTC); None = nothing held
    dropped: int  # rows refused because the buffer was full (new contracts during a long outage)
    coalesced: int  # rows superseded in the buffer by a newer row of the same contract
    flush_errors: int  # failed flushes (history append or book merge)
    last_flush_at: datetime | None  # last successful commit (UTC)
    rows_flushed: int
    commits: int
    book_pending: int  # rows in history whose merge into `positions` waits for a retry


class HistoryWriter:
    """Buffers PositionRows, at most one per (account, conid), and appends them in one commit per flush.

    Thread-safe. `append`/`extend` never touch storage (safe on an event loop); the owner calls
    `flush_if_due()` (time bound `flush_interval_s`, contract bound `max_buffered_rows`) or `flush()`, e.g.
    through `asyncio.to_thread`. A newer row of a buffered contract replaces the older one (coalescing), so
    the buffer is bounded by contracts, and never holds more than `buffer_cap` of them: during a lake
    outage, rows of further contracts are dropped and counted (`stats().dropped`). A failed flush puts its
    rows back (unless newer ones arrived meanwhile): nothing buffered is lost.

    After its history commit a flush merges the same rows into `positions`. If only that merge fails, the
    rows are kept apart (`book_pending`) and merged with the next flush; history is never written twice.

    Every `compact_every` commits the writer compacts the table itself: delta-rs commit time grows with
    the number of live files (~0.2 ms per file measured), so 1 flush/s would otherwise cost ~0.7 s per
    commit after an hour. 0 turns this off (then maintain() on a schedule must keep up).
    """

    def __init__(
        self,
        root_uri: str,
        table: str = "streamed_positions",
        storage_options: dict[str, str] | None = None,
        flush_interval_s: float = 1.0,
        max_buffered_rows: int = 10_000,
        compact_every: int = 200,
        buffer_cap: int = DEFAULT_BUFFER_CAP,
    ) -> None:
        _check_history_table(table)
        if buffer_cap < 1:
            raise ValueError(f"buffer_cap={buffer_cap!r}: must be >= 1 contract")
        self.root_uri = root_uri
        self.table = table
        self.storage_options = storage_options
        self.flush_interval_s = flush_interval_s
        self.max_buffered_rows = max_buffered_rows
        self.compact_every = compact_every
        self.buffer_cap = buffer_cap
        self.compactions = 0
        self.rows_flushed = 0
        self.commits = 0
        self.dropped = 0
        self.coalesced = 0
        self.flush_errors = 0
        self.last_flush_at: datetime | None = None
        self._buffer: dict[Key, dict[str, object]] = {}
        self._held_since: datetime | None = None
        self._book_pending: pl.DataFrame | None = None
        self._buffer_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time keeps commits in append order
        self._handle = TableHandle(root_uri, table, storage_options)
        self._spec = spec_for(table)
        self._book = PositionsBook(root_uri, storage_options)
        self._last_flush = time.monotonic()
        self._drop_logged = 0.0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def stats(self) -> WriterStats:
        with self._buffer_lock:
            buffered, held_since = len(self._buffer), self._held_since
        pending = self._book_pending
        return WriterStats(
            buffered=buffered,
            held_since=held_since,
            dropped=self.dropped,
            coalesced=self.coalesced,
            flush_errors=self.flush_errors,
            last_flush_at=self.last_flush_at,
            rows_flushed=self.rows_flushed,
            commits=self.commits,
            book_pending=0 if pending is None else pending.height,
        )

    def append(self, row: PositionRow) -> None:
        try:
            record = validated_record(row)  # a bad row is refused here, before it is buffered
        except InvalidRowError as exc:
            raise exc.at(self.table) from None
        with self._buffer_lock:
            self._hold(record)

    def extend(self, rows: Iterable[PositionRow]) -> None:
        records = validated_records(self.table, rows)
        with self._buffer_lock:
            for record in records:
                self._hold(record)

    def _hold(self, record: dict[str, object]) -> None:
        """Buffer one record (caller holds the buffer lock): the newest per contract, within the cap."""
        key = (record["account"], record["conid"])
        held = self._buffer.get(key)
        if held is not None:
            self.coalesced += 1
            if record["event_time"] >= held["event_time"]:  # type: ignore[operator]
                self._buffer[key] = record
            return
        if len(self._buffer) >= self.buffer_cap:
            self.dropped += 1
            now = time.monotonic()
            if now - self._drop_logged >= 10.0:  # a long outage must not flood the log either
                self._drop_logged = now
                log.warning(
                    "%s: buffer full (%d contracts held since %s); dropped %d rows of further contracts",
                    self.table,
                    len(self._buffer),
                    self._held_since,
                    self.dropped,
                )
            return
        if not self._buffer and self._held_since is None:
            self._held_since = datetime.now(UTC)
        self._buffer[key] = record

    def due(self) -> bool:
        if not self._buffer and self._book_pending is None:
            return False
        elapsed = time.monotonic() - self._last_flush
        return len(self._buffer) >= self.max_buffered_rows or elapsed >= self.flush_interval_s

    def flush_if_due(self) -> int:
        return self.flush() if self.due() else 0

    def flush(self) -> int:
        """Append everything buffered in one commit, then merge it into `positions`; returns rows appended."""
        with self._flush_lock:
            with self._buffer_lock:
                records, self._buffer = list(self._buffer.values()), {}
                held_since, self._held_since = self._held_since, None
            self._last_flush = time.monotonic()
            written = 0
            if records:
                frame = history_frame(records, self._spec, datetime.now(UTC))
                try:
                    written = _append(self._handle, frame)
                except BaseException:
                    self._put_back(records, held_since)
                    self.flush_errors += 1
                    log.exception(
                        "%s: flush of %d rows failed; rows kept for the next flush", self.table, len(records)
                    )
                    raise
                self.rows_flushed += written
                self.commits += 1
                self.last_flush_at = datetime.now(UTC)
                pending = frame if self._book_pending is None else pl.concat([self._book_pending, frame])
            else:
                pending = self._book_pending
            if pending is not None:
                self._merge_into_book(pending)
            if written and self.compact_every and self.commits % self.compact_every == 0:
                self._compact()
            if written:
                log.debug("%s: flushed %d rows (commit %d)", self.table, written, self.commits)
            return written

    def _merge_into_book(self, pending: pl.DataFrame) -> None:
        try:
            self._book.apply(pending)
        except Exception as exc:
            self._book_pending = pending  # in history already: retried with the next flush, never re-appended
            self.flush_errors += 1
            raise LakeError(
                f"positions: merge of {pending.height} rows from {self.table} failed ({exc}); "
                "kept for the next flush"
            ) from exc
        self._book_pending = None

    def _put_back(self, records: list[dict[str, object]], held_since: datetime | None) -> None:
        with self._buffer_lock:
            newer, self._buffer = self._buffer, {}
            self._held_since = held_since or self._held_since
            for record in (*records, *newer.values()):  # older first: a newer row of a contract wins
                self._hold(record)

    def _compact(self) -> None:
        # Best effort: a concurrent maintain() may win the race; the data is safe either way.
        try:
            table = self._handle.latest(create=True)
            metrics = table.optimize.compact()
        except Exception as exc:  # compaction failing must never lose or block rows
            log.warning("%s: compaction after %d commits failed: %s", self.table, self.commits, exc)
            return
        self.compactions += 1
        log.debug("%s: compacted %s files", self.table, metrics.get("numFilesRemoved"))

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
