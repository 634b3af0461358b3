"""HistoryWriter: one commit per flush, nothing lost on close, failure or concurrent appends."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from lake_helpers import Lake

from v6_positions.lake.errors import LakeSchemaError
from v6_positions.lake.history import HistoryWriter, PositionRow, write_rows
from v6_positions.lake.tables import read_table, table_version


def _row(conid: int, **kwargs: object) -> PositionRow:
    return PositionRow(
        account="DU1",
        conid=conid,
        symbol="SPY",
        right="C",
        strike=500.0,
        expiry="20261218",
        position=1.0,
        **kwargs,
    )


def test_one_commit_per_flush_and_written_at_added(lake: Lake) -> None:
    root, options = lake.root, lake.options
    writer = HistoryWriter(root, storage_options=options)
    assert writer.flush() == 0 and table_version(root, "streamed_positions", options) == -1
    writer.extend(_row(c) for c in range(1, 501))
    assert writer.buffered == 500
    before = datetime.now(UTC)
    assert writer.flush() == 500
    assert (writer.commits, writer.rows_flushed, writer.buffered) == (1, 500, 0)
    assert table_version(root, "streamed_positions", options) == 1  # create + one append
    rows = read_table(root, "streamed_positions", options)
    assert rows.height == 500 and rows["written_at"].min() >= before
    assert rows["source"].unique().to_list() == ["stream"]


def test_rows_are_partitioned_by_event_date(lake: Lake) -> None:
    root = lake.root
    with HistoryWriter(root, storage_options=lake.options) as writer:
        writer.append(_row(1, event_time=datetime(2026, 3, 2, 23, 59, tzinfo=UTC)))
        writer.append(_row(2, event_time=datetime(2026, 3, 3, 0, 1, tzinfo=UTC)))
    partitions = {p.split("/")[0] for p in lake.files("streamed_positions") if p.startswith("event_date=")}
    assert sorted(partitions) == [
        "event_date=2026-03-02",
        "event_date=2026-03-03",
    ]
    rows = read_table(root, "streamed_positions", lake.options).sort("conid")
    assert rows["event_date"].to_list() == [date(2026, 3, 2), date(2026, 3, 3)]


def test_ib_sentinels_are_stored_as_missing(lake: Lake) -> None:
    write_rows(
        lake.root,
        "streamed_positions",
        [_row(1, bid=float("nan"), ask=1.7976931348623157e308, last=2.5)],
        lake.options,
    )
    row = read_table(lake.root, "streamed_positions", lake.options).row(0, named=True)
    assert (row["bid"], row["ask"], row["last"]) == (None, None, 2.5)


def test_flush_if_due_honours_row_and_time_bounds(tmp_path: Path) -> None:
    writer = HistoryWriter(str(tmp_path), flush_interval_s=3600, max_buffered_rows=3)
    writer.extend([_row(1), _row(2)])
    assert writer.flush_if_due() == 0
    writer.append(_row(3))
    assert writer.flush_if_due() == 3
    timed = HistoryWriter(str(tmp_path), flush_interval_s=0.05)
    timed.append(_row(4))
    time.sleep(0.06)
    assert timed.flush_if_due() == 1
    assert timed.flush_if_due() == 0


def test_failed_flush_keeps_rows_for_the_next_one(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    blocker = root / "streamed_positions"
    blocker.mkdir(parents=True)
    (blocker / "junk.bin").write_bytes(b"x")
    writer = HistoryWriter(str(root))
    writer.extend(_row(c) for c in range(1, 11))
    with pytest.raises(LakeSchemaError):
        writer.flush()
    writer.append(_row(11))
    assert writer.buffered == 11 and writer.commits == 0
    shutil.rmtree(blocker)
    writer.close()
    rows = read_table(str(root), "streamed_positions")
    assert sorted(rows["conid"].to_list()) == list(range(1, 12))


def test_concurrent_appends_and_flushes_lose_nothing(lake: Lake) -> None:
    root, options = lake.root, lake.options
    writer = HistoryWriter(root, storage_options=options, flush_interval_s=0.01)
    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            writer.flush_if_due()
            time.sleep(0.005)

    def producer(base: int) -> None:
        for i in range(1, 2501):
            writer.append(_row(base + i))

    flushing = threading.Thread(target=flusher)
    flushing.start()
    producers = [threading.Thread(target=producer, args=(t * 10_000,)) for t in range(4)]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join()
    stop.set()
    flushing.join()
    writer.close()
    rows = read_table(root, "streamed_positions", options)
    assert rows.height == 10_000 == writer.rows_flushed
    assert rows["conid"].n_unique() == 10_000
    assert writer.commits < 1000  # micro-batches, not one commit per row
    assert table_version(root, "streamed_positions", options) == writer.commits + writer.compactions


def test_appends_from_an_event_loop_with_flushes_in_a_thread(lake: Lake) -> None:
    writer = HistoryWriter(lake.root, storage_options=lake.options, flush_interval_s=0.02)

    async def stream() -> None:
        for i in range(1, 301):
            writer.append(_row(i))
            if i % 50 == 0:
                await asyncio.to_thread(writer.flush_if_due)
            await asyncio.sleep(0)
        await asyncio.to_thread(writer.close)

    asyncio.run(stream())
    rows = read_table(lake.root, "streamed_positions", lake.options)
    assert sorted(rows["conid"].to_list()) == list(range(1, 301))


def test_write_rows_to_queued_positions_and_unknown_table(lake: Lake) -> None:
    root, options = lake.root, lake.options
    batch = [_row(1, source="batch"), _row(2, source="batch")]
    assert write_rows(root, "queued_positions", batch, options) == 2
    assert write_rows(root, "queued_positions", [], options) == 0
    rows = read_table(root, "queued_positions", options)
    assert rows.filter(pl.col("source") == "batch").height == 2
    with pytest.raises(ValueError, match="positions"):
        HistoryWriter(root, table="position_queue", storage_options=options)


def test_writer_compacts_its_table_every_n_commits(lake: Lake) -> None:
    writer = HistoryWriter(lake.root, storage_options=lake.options, compact_every=5)
    for conid in range(1, 13):
        writer.append(_row(conid))
        writer.flush()
    assert writer.commits == 12 and writer.compactions == 2
    table = DeltaTable(lake.uri("streamed_positions"), storage_options=lake.options)
    assert len(table.file_uris()) == 3  # 1 compacted file + the 2 flushes since
    rows = read_table(lake.root, "streamed_positions", lake.options)
    assert sorted(rows["conid"].to_list()) == list(range(1, 13))
