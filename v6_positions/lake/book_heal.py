"""The book heals itself from history: what history says always reaches `positions`, across crashes.

Writers append to history, then merge the same rows into `positions`. If the merge fails, or the process dies
between the two commits, history holds rows the book lacks. `heal_book` closes that gap durably: `positions`
records, for each history table, the version up to which it holds every row (a Delta app transaction,
committed atomically with the merge that brings those rows in). A heal reads only the rows appended after
that watermark (the history tables' change feed: the added files themselves, so the cost follows what is
new), merges their newest row per contract (newer event wins, so merging a row twice changes nothing) and
moves the watermark. Any writer's rows committed at or below the new watermark are in the book, whether
its own merge ever ran or not. Runs at every reconciliation (stream connect, and on a schedule).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import polars as pl
from deltalake.exceptions import DeltaError

from v6_positions.lake.positions import PositionsBook, read_positions
from v6_positions.lake.schemas import HISTORY_TABLES, spec_for
from v6_positions.lake.tables import TableHandle, conform

log = logging.getLogger(__name__)

_CHANGE_COLUMNS = ("_change_type", "_commit_version", "_commit_timestamp")


def watermark_app_id(table: str) -> str:
    """The app id under which `positions` records how much of `table` it holds."""
    return f"v6_positions.positions<-{table}"


@dataclass(slots=True)
class HealOutcome:
    rows_read: int = 0  # history rows appended since the watermarks
    book_rows_changed: int = 0  # rows of `positions` inserted or updated (0 when the writers' merges held)
    watermarks: dict[str, int] = field(default_factory=dict)  # table -> history version now held
    full_reads: list[str] = field(default_factory=list)  # tables read whole (no watermark, or feed gone)


def heal_book(
    root_uri: str,
    storage_options: dict[str, str] | None = None,
    *,
    tables: tuple[str, ...] = HISTORY_TABLES,
    full: bool = False,
) -> HealOutcome:
    """Merge into `positions` every history row appended since its watermarks (all of it when `full`)."""
    book = PositionsBook(root_uri, storage_options)
    held = book.watermarks([watermark_app_id(t) for t in tables])
    outcome = HealOutcome()
    frames = []
    for table in tables:
        since = None if full else held.get(watermark_app_id(table))
        version, frame, whole = _appended_since(root_uri, table, storage_options, since)
        if version is None:
            continue  # no such table yet
        outcome.watermarks[table] = version
        if whole:
            outcome.full_reads.append(table)
        if frame is not None and frame.height:
            frames.append(frame)
    if not frames:
        return outcome
    rows = pl.concat(frames)
    outcome.rows_read = rows.height
    marks = {watermark_app_id(t): v for t, v in outcome.watermarks.items()}
    outcome.book_rows_changed = book.apply(rows, watermarks=marks)
    log.info(
        "book healed from %d history rows (%s): %d book rows changed",
        outcome.rows_read,
        ", ".join(f"{t} to v{v}" for t, v in outcome.watermarks.items()),
        outcome.book_rows_changed,
    )
    return outcome


def _appended_since(
    root_uri: str, table: str, storage_options: dict[str, str] | None, since: int | None
) -> tuple[int | None, pl.DataFrame | None, bool]:
    """(current version, rows appended after `since` (None: all rows), whether the table was read whole)."""
    spec = spec_for(table)
    delta = TableHandle(root_uri, table, storage_options).latest(create=False)
    if delta is None:
        return None, None, False
    current = delta.version()
    if since is not None and since >= current:
        return current, None, False
    if since is not None:
        try:
            feed = pl.DataFrame(delta.load_cdf(starting_version=since + 1, ending_version=current).read_all())
        except DeltaError as exc:  # feed not kept that long (log retention), or enabled after `since`
            log.info("%s: no change feed from version %d (%s); reading it whole", table, since + 1, exc)
        else:
            if feed.is_empty():
                return current, None, False
            inserted = feed.filter(pl.col("_change_type") == "insert").drop(_CHANGE_COLUMNS, strict=False)
            return current, conform(inserted, spec), False
    # Whole table, reduced to the newest row per contract inside the scan (history can be millions of rows).
    whole = (
        pl.scan_delta(delta)
        .sort(["event_time", "written_at"], nulls_last=False)
        .group_by(["account", "conid"])
        .last()
        .collect()
    )
    return current, conform(whole, spec), True


def refresh_positions(root_uri: str, storage_options: dict[str, str] | None = None) -> int:
    """Merge the newest row per contract of ALL history into `positions` (repair); returns open rows.

    A MERGE (newer event wins), never an overwrite: a writer's merge that commits meanwhile is kept, not
    undone. Reads all history: not for a hot path (`heal_book` reads only what is new)."""
    heal_book(root_uri, storage_options, full=True)
    opened = read_positions(root_uri, storage_options).height
    log.info("positions rebuilt from history: %d open positions", opened)
    return opened
