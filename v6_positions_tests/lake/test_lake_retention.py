"""Bounded growth: history retention by date partition, and old closes purged from the book."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from deltalake import DeltaTable
from lake_helpers import Lake

from v6_positions.lake.errors import LakeError
from v6_positions.lake.history import PositionRow, write_rows
from v6_positions.lake.maintenance import delete_history_before, maintain
from v6_positions.lake.positions import read_positions
from v6_positions.lake.tables import read_table


def _day_rows(day: date, conids: range, source: str) -> list[PositionRow]:
    at = datetime(day.year, day.month, day.day, 15, 0, tzinfo=UTC)
    return [PositionRow("A", c, "SPY", position=1.0, source=source, event_time=at) for c in conids]


def _partition_files(lake: Lake, table: str, day: date) -> list[str]:
    return [f for f in lake.files(table) if f.startswith(f"event_date={day.isoformat()}/")]


def test_history_retention_drops_whole_old_partitions(lake: Lake) -> None:
    root, options = lake.root, lake.options
    days = [date(2026, 6, 1), date(2026, 6, 2), date(2026, 6, 3)]
    for day in days:
        write_rows(root, "streamed_positions", _day_rows(day, range(1, 11), "stream"), options)
        write_rows(root, "queued_positions", _day_rows(day, range(100, 105), "batch"), options)
    kept_files = _partition_files(lake, "streamed_positions", days[1])

    stats = maintain(root, options, history_retention_days=1, today=days[2])
    assert (
        stats["streamed_positions"]["rows_deleted"] == 10 and stats["queued_positions"]["rows_deleted"] == 5
    )
    for table in ("streamed_positions", "queued_positions"):
        assert sorted(read_table(root, table, options)["event_date"].unique().to_list()) == days[1:]
    # Whole files were dropped: the kept partition's files are the very same (nothing rewritten).
    assert _partition_files(lake, "streamed_positions", days[1]) == kept_files
    assert read_positions(root, options).height == 15  # the book is not history: untouched


def test_default_retention_keeps_all_history(lake: Lake) -> None:
    root, options = lake.root, lake.options
    write_rows(root, "streamed_positions", _day_rows(date(2020, 1, 2), range(1, 4), "stream"), options)
    stats = maintain(root, options)
    assert stats["streamed_positions"]["rows_deleted"] == 0
    assert read_table(root, "streamed_positions", options).height == 3
    assert delete_history_before(root, "queued_positions", date(2030, 1, 1), options) == 0  # absent table


def test_closed_positions_are_purged_from_the_book_after_a_day(lake: Lake) -> None:
    root, options = lake.root, lake.options
    now = datetime.now(UTC)
    rows = [
        PositionRow("A", 1, "SPY", position=0.0, event_time=now - timedelta(hours=30)),  # old close
        PositionRow("A", 2, "SPY", position=0.0, event_time=now - timedelta(hours=2)),  # recent close
        PositionRow("A", 3, "SPY", position=5.0, event_time=now - timedelta(hours=30)),  # open, old
    ]
    write_rows(root, "streamed_positions", rows, options)
    stats = maintain(root, options, tables=["positions"])
    assert stats["positions"]["rows_deleted"] == 1
    stored = DeltaTable(lake.uri("positions"), storage_options=options)
    assert stored.version() >= 0
    remaining = read_table(root, "positions", options).sort("conid")
    assert remaining["conid"].to_list() == [2, 3]  # the recent tombstone still guards against late events
    assert read_positions(root, options)["conid"].to_list() == [3]


def test_bad_retention_arguments_are_refused(lake: Lake) -> None:
    with pytest.raises(LakeError, match="history_retention_days=-1"):
        maintain(lake.root, lake.options, history_retention_days=-1)
    with pytest.raises(LakeError, match="closed_retention_hours=-2"):
        maintain(lake.root, lake.options, closed_retention_hours=-2)
    with pytest.raises(LakeError, match="table='positions'"):
        delete_history_before(lake.root, "positions", date(2026, 1, 1), lake.options)
