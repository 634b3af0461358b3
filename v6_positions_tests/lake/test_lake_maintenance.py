"""maintain(): compaction, checkpoint and vacuum on real tables; the data reads the same afterwards."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from lake_helpers import Lake, enqueue

from v6_positions.lake.errors import LakeError
from v6_positions.lake.history import HistoryWriter, PositionRow
from v6_positions.lake.maintenance import maintain
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.tables import read_table


def _many_small_appends(lake: Lake, flushes: int) -> None:
    writer = HistoryWriter(lake.root, storage_options=lake.options)
    when = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
    for i in range(1, flushes + 1):
        writer.append(PositionRow(account="A", conid=i, symbol="SPY", position=1.0, event_time=when))
        writer.flush()


def test_maintain_compacts_checkpoints_and_vacuums(lake: Lake) -> None:
    root, options = lake.root, lake.options
    _many_small_appends(lake, 30)
    enqueue(PositionQueue(root, options), 1, "SPY")
    before = read_table(root, "streamed_positions", options).sort("conid")

    stats = maintain(root, options, retention_hours=0, enforce_retention_duration=False)

    # Tables not created are skipped; the stream's flushes keep `positions` current, so it exists.
    assert set(stats) == {"streamed_positions", "position_queue", "positions"}
    streamed = stats["streamed_positions"]
    assert streamed["files_before"] == 30 and streamed["files_after"] == 1
    assert streamed["files_compacted"] == 30 and streamed["files_vacuumed"] == 30
    log = [name for name in lake.files("streamed_positions") if name.startswith("_delta_log/")]
    assert any(name.endswith(".checkpoint.parquet") for name in log)
    assert read_table(root, "streamed_positions", options).sort("conid").equals(before)


def test_default_retention_keeps_recent_files(lake: Lake) -> None:
    root, options = lake.root, lake.options
    _many_small_appends(lake, 5)
    stats = maintain(root, options, tables=["streamed_positions"])
    assert stats["streamed_positions"]["files_compacted"] == 5
    assert stats["streamed_positions"]["files_vacuumed"] == 0  # still inside the 168 h retention
    assert read_table(root, "streamed_positions", options).height == 5


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LakeError, match="unknown tables"):
        maintain(str(tmp_path), tables=["nope"])
    with pytest.raises(LakeError, match="retention_hours"):
        maintain(str(tmp_path), retention_hours=-1)
    assert maintain(str(tmp_path)) == {}
