"""Coalesces position-queue writes: many refreshes of one contract between flushes become one row, and
every flush is ONE `insert_many` commit (a 2,000-position book is one commit, not 2,000)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, fields

from v6_positions.ib.account.holdings import Holding, HoldingKey, queue_item
from v6_positions.lake.errors import InvalidRowError
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.rows import QueueItem

log = logging.getLogger(__name__)

# What makes a write new: everything the stream sets except the payload's time (IB re-sends the same values).
_SIGNATURE = tuple(f.name for f in fields(QueueItem) if f.name != "payload_time")


@dataclass(slots=True)
class QueueStats:
    """The position_queue writes as the stream's status shows them."""

    rows_written: int
    commits: int
    rows_rejected: int  # rows the table's contract refused (logged with the field)
    flush_errors: int  # failed commits (rows kept for the next flush)


class QueueBuffer:
    def __init__(self, queue: PositionQueue) -> None:
        self.queue = queue
        self._items: dict[HoldingKey, QueueItem] = {}
        self._written: dict[HoldingKey, tuple] = {}  # what the lake already has, to skip no-op refreshes
        self._flush_lock = asyncio.Lock()
        self.rows_written = 0
        self.commits = 0
        self.rows_rejected = 0
        self.flush_errors = 0

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> QueueStats:
        return QueueStats(self.rows_written, self.commits, self.rows_rejected, self.flush_errors)

    def put(self, holding: Holding, priority: int, *, force: bool = False) -> None:
        """Buffer the holding's latest payload; a key already buffered is merged (better priority wins).
        Without `force`, a payload identical to the one last written is skipped; routing changes force
        the write so the row is pending again."""
        item = queue_item(holding, priority)
        old = self._items.get(holding.key)
        if old is not None:
            item.priority = min(old.priority, priority)
        elif not force and self._written.get(holding.key) == _signature(item):
            return  # IB re-sent the same payload (the 3-minute portfolio push): nothing new to write
        self._items[holding.key] = item

    async def flush(self) -> int:
        """Write everything buffered in one commit (in a worker thread). Keeps the rows if the lake fails."""
        async with self._flush_lock:
            if not self._items:
                return 0
            items, self._items = self._items, {}
            try:
                written = await asyncio.to_thread(self._insert, list(items.values()))
            except Exception:
                self.flush_errors += 1
                for key, item in items.items():
                    self._items.setdefault(key, item)  # newer payloads buffered meanwhile win
                log.exception("position_queue write of %d rows failed; kept for the next flush", len(items))
                return 0
            self.rows_written += written
            for key, item in items.items():
                self._written[key] = _signature(item)
            return written

    def _insert(self, items: list[QueueItem]) -> int:
        # One bad row refuses the whole batch: drop that row (logged) and write the rest.
        while items:
            try:
                written = self.queue.insert_many(items)
            except InvalidRowError as exc:
                if exc.row_index is None:
                    raise
                bad = items.pop(exc.row_index)
                self.rows_rejected += 1
                log.error("position_queue refused conid=%s: %s; row dropped", bad.conid, exc)
                continue
            self.commits += 1
            return int(written)
        return 0


def _signature(item: QueueItem) -> tuple:
    return tuple(getattr(item, name) for name in _SIGNATURE)
