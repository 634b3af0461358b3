"""Small-file hygiene and bounded growth: retention of history, purge of old closes, compact, vacuum."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from deltalake import DeltaTable

from v6_positions.lake.errors import LakeError
from v6_positions.lake.schemas import HISTORY_TABLES, POSITIONS, TABLES
from v6_positions.lake.tables import open_table, retry_on_conflict

log = logging.getLogger(__name__)


def delete_history_before(
    root_uri: str, table: str, cutoff: date, storage_options: dict[str, str] | None = None
) -> int:
    """Delete a history table's rows with event_date < cutoff; returns rows deleted.

    The predicate is on the partition column only, so whole partitions (files) are dropped from the log
    without reading or rewriting a row; vacuum frees the files once the log retention allows.
    """
    if table not in HISTORY_TABLES:
        raise LakeError(f"table={table!r}: retention applies to {', '.join(HISTORY_TABLES)}")
    delta = open_table(root_uri, table, storage_options)
    if delta is None:
        return 0

    def delete() -> int:
        delta.update_incremental()
        metrics = delta.delete(predicate=f"event_date < '{cutoff.isoformat()}'")
        return int(metrics.get("num_deleted_rows", 0))

    deleted = retry_on_conflict(delete, what=f"{table} retention delete before {cutoff}")
    log.info("%s: deleted %d rows before %s (retention)", table, deleted, cutoff)
    return deleted


def purge_closed_positions(
    root_uri: str, older_than: datetime, storage_options: dict[str, str] | None = None
) -> int:
    """Delete tombstones of closed positions (position 0) whose close is older than `older_than`.

    A tombstone only guards against a late, older event resurrecting the close; after a day none is coming.
    """
    table = open_table(root_uri, POSITIONS.name, storage_options)
    if table is None:
        return 0
    cutoff = older_than.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    def delete() -> int:
        table.update_incremental()
        metrics = table.delete(predicate=f"position = 0 AND event_time < '{cutoff}'")
        return int(metrics.get("num_deleted_rows", 0))

    purged = retry_on_conflict(delete, what="positions purge of closed rows")
    log.info("positions: purged %d closed rows older than %s", purged, cutoff)
    return purged


def maintain_table(
    table: DeltaTable, name: str, *, retention_hours: int, enforce_retention_duration: bool
) -> dict[str, object]:
    started = time.perf_counter()
    version_before = table.version()
    files_before = len(table.file_uris())

    def compact() -> dict[str, Any]:
        # Compaction loses to a concurrent MERGE (delta-rs #2700): reload and try again.
        table.update_incremental()
        return table.optimize.compact()

    compacted = retry_on_conflict(compact, what=f"{name} compaction", attempts=5)
    table.update_incremental()
    table.create_checkpoint()
    vacuumed = table.vacuum(
        retention_hours=retention_hours,
        dry_run=False,
        enforce_retention_duration=enforce_retention_duration,
    )
    table.cleanup_metadata()  # log files older than the log retention, now covered by the checkpoint
    stats: dict[str, object] = {
        "version_before": version_before,
        "version_after": table.version(),
        "files_before": files_before,
        "files_after": len(table.file_uris()),
        "files_compacted": int(compacted.get("numFilesRemoved", 0)),
        "files_added": int(compacted.get("numFilesAdded", 0)),
        "files_vacuumed": len(vacuumed),
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.info("maintained %s: %s", name, stats)
    return stats


def maintain(
    root_uri: str,
    storage_options: dict[str, str] | None = None,
    tables: Iterable[str] | None = None,
    retention_hours: int = 168,
    enforce_retention_duration: bool = True,
    history_retention_days: int = 0,
    closed_retention_hours: float = 24.0,
    today: date | None = None,
) -> dict[str, dict[str, object]]:
    """Apply retention, then compact, checkpoint and vacuum each existing table; returns per-table stats.

    `history_retention_days` (V6_HISTORY_RETENTION_DAYS): keep this many days of history before today
    (UTC) and delete older date partitions; 0 keeps everything. `closed_retention_hours`: how long the
    book keeps the tombstone of a closed position. `retention_hours` is the vacuum's file retention.
    Tables not created yet are skipped (absent from the result). A retention shorter than the table's
    `delta.deletedFileRetentionDuration` (7 days by default) needs enforce_retention_duration=False.
    """
    names = list(TABLES) if tables is None else list(tables)
    unknown = [name for name in names if name not in TABLES]
    if unknown:
        raise LakeError(f"unknown tables {unknown}; known: {', '.join(TABLES)}")
    if retention_hours < 0:
        raise LakeError(f"retention_hours={retention_hours}: must be >= 0")
    if history_retention_days < 0:
        raise LakeError(f"history_retention_days={history_retention_days}: must be >= 0 (0 keeps everything)")
    if closed_retention_hours < 0:
        raise LakeError(f"closed_retention_hours={closed_retention_hours}: must be >= 0")
    today = today or datetime.now(UTC).date()
    results: dict[str, dict[str, object]] = {}
    for name in names:
        deleted = 0
        if name in HISTORY_TABLES and history_retention_days:
            cutoff = today - timedelta(days=history_retention_days)
            deleted = delete_history_before(root_uri, name, cutoff, storage_options)
        elif name == POSITIONS.name:
            older_than = datetime.now(UTC) - timedelta(hours=closed_retention_hours)
            deleted = purge_closed_positions(root_uri, older_than, storage_options)
        table = open_table(root_uri, name, storage_options)
        if table is None:
            continue
        results[name] = maintain_table(
            table,
            name,
            retention_hours=retention_hours,
            enforce_retention_duration=enforce_retention_duration,
        )
        results[name]["rows_deleted"] = deleted
    return results
