"""HistoryWriter's buffer: one row per contract per flush, a hard cap, honest stats, the book kept current."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from v6_positions.lake.errors import LakeError, LakeSchemaError
from v6_positions.lake.history import HistoryWriter, PositionRow
from v6_positions.lake.positions import read_positions
from v6_positions.lake.tables import read_table

T0 = datetime(2026, 5, 4, 14, 0, tzinfo=UTC)


def _row(conid: int, seconds: float, price: float) -> PositionRow:
    return PositionRow(
        account="DU1",
        conid=conid,
        symbol="SPY",
        position=1.0,
        market_price=price,
        event_time=T0 + timedelta(seconds=seconds),
    )


def test_a_flush_writes_the_newest_row_per_contract(lake_root: str) -> None:
    writer = HistoryWriter(lake_root)
    writer.extend([_row(1, 1, 1.0), _row(1, 3, 3.0), _row(2, 1, 7.0), _row(1, 2, 2.0)])  # last one is late
    writer.append(_row(1, 3, 3.5))  # same event_time, appended later: wins
    assert writer.buffered == 2
    assert writer.flush() == 2
    history = read_table(lake_root, "streamed_positions").sort("conid")
    assert history["market_price"].to_list() == [3.5, 7.0]
    assert read_positions(lake_root).sort("conid")["market_price"].to_list() == [3.5, 7.0]
    stats = writer.stats()
    assert (stats.coalesced, stats.dropped, stats.buffered) == (3, 0, 0)
    assert (stats.commits, stats.rows_flushed) == (1, 2)


def test_the_buffer_is_capped_by_contracts_and_counts_what_it_dropped(lake_root: str) -> None:
    writer = HistoryWriter(lake_root, buffer_cap=3)
    before = datetime.now(UTC)
    writer.extend([_row(1, 1, 1.0), _row(2, 1, 2.0), _row(3, 1, 3.0)])
    writer.append(_row(4, 1, 4.0))  # a fourth contract: no room
    writer.append(_row(2, 5, 2.5))  # a held contract still takes its newer row
    stats = writer.stats()
    assert (stats.buffered, stats.dropped, stats.coalesced) == (3, 1, 1)
    assert stats.held_since is not None and stats.held_since >= before and stats.last_flush_at is None
    writer.flush()
    stats = writer.stats()
    assert stats.buffered == 0 and stats.held_since is None and stats.last_flush_at is not None
    assert sorted(read_table(lake_root, "streamed_positions")["market_price"].to_list()) == [1.0, 2.5, 3.0]
    with pytest.raises(ValueError, match="buffer_cap=0"):
        HistoryWriter(lake_root, buffer_cap=0)


def test_an_outage_keeps_the_newest_rows_within_the_cap(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    blocker = root / "streamed_positions"
    blocker.mkdir(parents=True)
    (blocker / "junk.bin").write_bytes(b"x")  # the lake is unusable until this goes
    writer = HistoryWriter(str(root), buffer_cap=2)
    writer.extend([_row(1, 1, 1.0), _row(2, 1, 2.0)])
    with pytest.raises(LakeSchemaError):
        writer.flush()
    writer.extend([_row(1, 9, 1.9), _row(3, 9, 3.9)])  # newer row of a held contract; a new contract: dropped
    stats = writer.stats()
    assert (stats.buffered, stats.dropped, stats.flush_errors, stats.commits) == (2, 1, 1, 0)
    held_since = stats.held_since
    assert held_since is not None
    with pytest.raises(LakeSchemaError):
        writer.flush()
    assert writer.stats().held_since == held_since  # still waiting since the first row
    shutil.rmtree(blocker)
    assert writer.flush() == 2
    assert sorted(read_table(str(root), "streamed_positions")["market_price"].to_list()) == [1.9, 2.0]


def test_a_failed_book_merge_is_retried_without_writing_history_twice(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    blocker = root / "positions"
    blocker.mkdir(parents=True)
    (blocker / "junk.bin").write_bytes(b"x")
    writer = HistoryWriter(str(root), flush_interval_s=0.0)
    writer.extend([_row(1, 1, 1.0), _row(2, 1, 2.0)])
    with pytest.raises(LakeError, match="positions: merge of 2 rows"):
        writer.flush()
    stats = writer.stats()
    assert (stats.book_pending, stats.flush_errors, stats.commits, stats.buffered) == (2, 1, 1, 0)
    assert writer.due()  # an empty buffer, but the book still owes a merge
    shutil.rmtree(blocker)
    writer.append(_row(2, 5, 2.5))
    assert writer.flush() == 1
    assert writer.stats().book_pending == 0
    assert read_table(str(root), "streamed_positions").height == 3  # 2 + 1: nothing appended twice
    assert read_positions(str(root)).sort("conid")["market_price"].to_list() == [1.0, 2.5]
