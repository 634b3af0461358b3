"""A lake root plus the storage options to reach it, local or on an S3 API (see conftest's `lake`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.queue_reads import items_of
from v6_positions.lake.rows import DEFAULT_PRIORITY, PositionRow, QueueItem
from v6_positions.lake.tables import read_table, table_uri, table_version

if TYPE_CHECKING:  # the concurrency workers import this module without the tests' root on sys.path
    from s3_server import S3Server


@dataclass(slots=True)
class Lake:
    """A lake root and the storage options to reach it."""

    storage: str  # "local" or "s3"
    root: str
    options: dict[str, str] | None
    _s3: S3Server | None = None
    _bucket: str = ""

    def uri(self, table: str) -> str:
        return table_uri(self.root, table)

    def files(self, table: str) -> list[str]:
        """Every object of a table (data files and log), relative to the table's root, sorted."""
        if self._s3 is None:
            base = Path(self.root) / table
            return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())
        prefix = f"lake/{table}/"
        return [key[len(prefix) :] for key in self._s3.keys(self._bucket, prefix)]


def aged_row(account: str, conid: int, position: float, minutes_ago: float, source: str) -> PositionRow:
    """An SPY observation of `position`, `minutes_ago` old."""
    return PositionRow(
        account=account,
        conid=conid,
        symbol="SPY",
        position=position,
        source=source,
        event_time=datetime.now(UTC) - timedelta(minutes=minutes_ago),
    )


def queue_items(queue: PositionQueue, status: str | None = None) -> list[QueueItem]:
    """Every row of the queue (with this status) as the queue's records, sorted by (account, conid)."""
    rows = read_table(queue.root_uri, "position_queue", queue.storage_options)
    if status is not None:
        rows = rows.filter(pl.col("status") == status)
    return items_of(rows.sort(["account", "conid"]))


def queue_version(queue: PositionQueue) -> int:
    """The queue table's current version (-1 before its first commit)."""
    return table_version(queue.root_uri, "position_queue", queue.storage_options)


def enqueue(
    queue: PositionQueue,
    conid: int,
    symbol: str,
    priority: int = DEFAULT_PRIORITY,
    *,
    account: str = "",
    **fields: object,
) -> None:
    """Queue one contract in its own commit; `fields` are QueueItem's (contract, multiplier, payload)."""
    queue.insert_many([QueueItem(account=account, conid=conid, symbol=symbol, priority=priority, **fields)])  # type: ignore[arg-type]
