"""Where risk rows live: a current snapshot plus an append-only history per measure, and the days' closes.

- `write_snapshot`: the refresh's rows appended to `<name>_history` (partitioned by the UTC date of
  `as_of`) and written over `<name>` (the current snapshot, one small file). Both commits are small; every
  `TIDY_EVERY` versions the writer vacuums the snapshot's replaced files and compacts today's history
  partition, so neither the directory nor a day's file count grows with the day.
- `replace_day`: a day's close rows written over that day's partition of an EOD table (a backfill that
  runs again replaces, never duplicates).
"""

from __future__ import annotations

import logging
from datetime import date, datetime

import polars as pl
from deltalake import DeltaTable

from v6_positions.lake.properties import ensure_properties
from v6_positions.lake.schemas import TableSpec, spec_for
from v6_positions.lake.tables import conform, ensure_table, frame_of, open_table, retry_on_conflict

log = logging.getLogger(__name__)

TIDY_EVERY = 60  # snapshot versions (one a minute): an hour of refreshes


def history_name(snapshot: TableSpec) -> str:
    return f"{snapshot.name}_history"


def write_snapshot(
    root_uri: str,
    snapshot: TableSpec,
    frame: pl.DataFrame,
    as_of: datetime,
    storage_options: dict[str, str] | None = None,
) -> None:
    """Append `frame` (rows as of `as_of`) to the history, then make it the current snapshot."""
    history = spec_for(history_name(snapshot))
    rows = conform(frame.with_columns(as_of_date=pl.lit(as_of.date())), history)
    history_table = _table(root_uri, history, storage_options)
    retry_on_conflict(
        lambda: _append(history_table, rows), what=f"{history.name} append of {rows.height} rows"
    )
    table = _table(root_uri, snapshot, storage_options)
    retry_on_conflict(lambda: _overwrite(table, conform(frame, snapshot)), what=f"{snapshot.name} overwrite")
    if table.version() % TIDY_EVERY == 0:
        _tidy(table, history_table, as_of.date())


def read_snapshot(
    root_uri: str, snapshot: TableSpec, storage_options: dict[str, str] | None = None
) -> pl.DataFrame:
    """The current snapshot; empty (declared schema) before the first refresh."""
    table = open_table(root_uri, snapshot.name, storage_options)
    return snapshot.empty_frame() if table is None else frame_of(table, snapshot)


def replace_day(
    root_uri: str,
    spec: TableSpec,
    day: date,
    frame: pl.DataFrame,
    storage_options: dict[str, str] | None = None,
) -> int:
    """Write `frame` over the `eod_date = day` partition of an EOD table; returns rows written."""
    rows = conform(frame.with_columns(eod_date=pl.lit(day)), spec)
    table = _table(root_uri, spec, storage_options)

    def write() -> None:
        table.update_incremental()
        rows.write_delta(
            table, mode="overwrite", delta_write_options={"predicate": f"eod_date = '{day.isoformat()}'"}
        )

    retry_on_conflict(write, what=f"{spec.name} replace of {day}")
    return rows.height


def _table(root_uri: str, spec: TableSpec, storage_options: dict[str, str] | None) -> DeltaTable:
    table = ensure_table(root_uri, spec.name, storage_options)
    ensure_properties(table, spec)
    return table


def _append(table: DeltaTable, rows: pl.DataFrame) -> None:
    table.update_incremental()
    rows.write_delta(table, mode="append")


def _overwrite(table: DeltaTable, rows: pl.DataFrame) -> None:
    table.update_incremental()
    rows.write_delta(table, mode="overwrite")
    table.update_incremental()


def _tidy(snapshot: DeltaTable, history: DeltaTable, today: date) -> None:
    """Best effort, like the book's: the daily maintenance does it anyway."""
    try:
        snapshot.vacuum(retention_hours=None, dry_run=False, enforce_retention_duration=True)
        history.update_incremental()
        history.optimize.compact(partition_filters=[("as_of_date", "=", today.isoformat())])
    except Exception as exc:
        log.warning("risk tables: vacuum/compaction failed (maintenance will retry): %s", exc)
