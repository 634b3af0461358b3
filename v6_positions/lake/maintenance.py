"""Small-file hygiene: compact, checkpoint and vacuum every table that exists."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from deltalake import DeltaTable

from v6_positions.lake.errors import LakeError
from v6_positions.lake.schemas import TABLES
from v6_positions.lake.tables import open_table, retry_on_conflict

log = logging.getLogger(__name__)


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
) -> dict[str, dict[str, object]]:
    """Compact, checkpoint and vacuum each existing table; returns per-table stats.

    Tables not created yet are skipped (absent from the result). A retention shorter than the table's
    `delta.deletedFileRetentionDuration` (7 days by default) needs enforce_retention_duration=False.
    """
    names = list(TABLES) if tables is None else list(tables)
    unknown = [name for name in names if name not in TABLES]
    if unknown:
        raise LakeError(f"unknown tables {unknown}; known: {', '.join(TABLES)}")
    if retention_hours < 0:
        raise LakeError(f"retention_hours={retention_hours}: must be >= 0")
    results: dict[str, dict[str, object]] = {}
    for name in names:
        table = open_table(root_uri, name, storage_options)
        if table is None:
            continue
        results[name] = maintain_table(
            table,
            name,
            retention_hours=retention_hours,
            enforce_retention_duration=enforce_retention_duration,
        )
    return results
