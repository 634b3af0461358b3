"""The incremental book: `positions` kept current by every history append, equal to a full rebuild."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from deltalake import DeltaTable
from lake_helpers import Lake, aged_row, enqueue

from v6_positions.lake.book_heal import heal_book, refresh_positions
from v6_positions.lake.errors import InvalidRowError
from v6_positions.lake.history import HistoryWriter, PositionRow, write_rows
from v6_positions.lake.positions import (
    COMPACT_ABOVE_FILES,
    PositionsBook,
    apply_to_positions,
    newest_per_contract,
    read_positions,
)
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.rows import history_frame, validated_records
from v6_positions.lake.schemas import HISTORY_TABLES, spec_for
from v6_positions.lake.tables import read_table, table_version

_COLUMNS = ["account", "conid", "position", "market_price", "source", "event_time", "written_at"]


def _full_rebuild(lake: Lake) -> pl.DataFrame:
    """The book from scratch: the newest row per contract of all history, closed positions (0) left out."""
    history = pl.concat([read_table(lake.root, name, lake.options) for name in HISTORY_TABLES])
    newest = newest_per_contract(history)
    held = newest.filter(pl.col("position").is_null() | (pl.col("position") != 0))
    return held.select(_COLUMNS).sort(["account", "conid"])


def _book(lake: Lake) -> pl.DataFrame:
    return read_positions(lake.root, lake.options).select(_COLUMNS).sort(["account", "conid"])


def test_write_rows_keeps_the_book_current_without_a_rebuild(lake: Lake) -> None:
    root, options = lake.root, lake.options
    rows = [aged_row("A", 1, 5.0, 10, "batch"), aged_row("A", 2, 1.0, 10, "batch")]
    write_rows(root, "queued_positions", rows, options)
    assert _book(lake)["position"].to_list() == [5.0, 1.0]
    stream = HistoryWriter(root, storage_options=options)
    stream.append(aged_row("A", 1, 6.0, 1, "stream"))
    stream.flush()
    assert _book(lake).filter(pl.col("conid") == 1)["source"].to_list() == ["stream"]
    stream.append(aged_row("A", 2, 0.0, 2, "stream"))  # closed
    stream.flush()
    assert _book(lake)["conid"].to_list() == [1]
    # A batch fetch older than the close commits after it: the close must stand.
    write_rows(root, "queued_positions", [aged_row("A", 2, 1.0, 3, "batch")], options)
    assert _book(lake)["conid"].to_list() == [1]
    # Reopened: newer than the close.
    write_rows(root, "queued_positions", [aged_row("A", 2, 4.0, 0, "batch")], options)
    assert _book(lake)["position"].to_list() == [6.0, 4.0]
    assert _book(lake).equals(_full_rebuild(lake))


def test_an_equal_event_time_written_later_wins(lake: Lake) -> None:
    root, options = lake.root, lake.options
    at = datetime(2026, 5, 4, 15, 30, tzinfo=UTC)
    write_rows(
        root,
        "queued_positions",
        [PositionRow("A", 1, "SPY", position=1.0, source="batch", event_time=at)],
        options,
    )
    write_rows(root, "streamed_positions", [PositionRow("A", 1, "SPY", position=2.0, event_time=at)], options)
    assert _book(lake)["position"].to_list() == [2.0]
    assert _book(lake).equals(_full_rebuild(lake))


@pytest.mark.parametrize("seed", [7, 11, 2026])
def test_incremental_book_equals_a_full_rebuild_on_random_histories(lake_root: str, seed: int) -> None:
    """Random stream (coalescing writer) and batch commits: ties, closes, reopens, late events.

    Local only (the merge logic does not depend on storage; the S3 variants of the other tests cover that).
    """
    rng = random.Random(seed)
    lake = Lake("local", lake_root, None)
    root, options = lake.root, lake.options
    stream = HistoryWriter(root, storage_options=options)
    base = datetime(2026, 5, 4, 14, 0, tzinfo=UTC)
    keys = [(account, conid) for account in ("A", "B") for conid in range(1, 7)]
    for step in range(14):
        rows = []
        for _ in range(rng.randint(1, 8)):
            account, conid = rng.choice(keys)
            rows.append(
                PositionRow(
                    account=account,
                    conid=conid,
                    symbol="SPY",
                    position=rng.choice([0.0, 0.0, 1.0, -2.0, 3.0, None]),
                    market_price=round(rng.uniform(0.5, 9.5), 2),
                    source="stream" if step % 2 else "batch",
                    # few distinct times: equal event_times across commits, and late (older) events
                    event_time=base + timedelta(minutes=rng.randint(0, 5)),
                )
            )
        if step % 2:
            stream.extend(rows)  # coalesced: one row per contract per flush, the newest
            stream.flush()
        else:
            # One batch commit holds one row per contract (as the batch writes them).
            unique = {(row.account, row.conid): row for row in rows}
            write_rows(root, "queued_positions", unique.values(), options)
        assert _book(lake).equals(_full_rebuild(lake)), f"seed {seed}: book != rebuild after commit {step}"
    assert refresh_positions(root, options) == _book(lake).height
    assert _book(lake).equals(_full_rebuild(lake))


def test_nothing_lost_when_the_batch_and_the_stream_commit_at_once(lake: Lake) -> None:
    root, options = lake.root, lake.options
    start = threading.Barrier(2)
    errors: list[BaseException] = []
    now = datetime.now(UTC)

    def batch() -> None:
        start.wait()
        for run in range(6):
            rows = [
                PositionRow("A", conid, "SPY", position=float(run + 1), source="batch", event_time=now)
                for conid in range(1, 201)
            ]
            write_rows(root, "queued_positions", rows, options)

    def streaming() -> None:
        writer = HistoryWriter(root, storage_options=options)
        start.wait()
        for tick in range(12):
            writer.extend(
                PositionRow("A", conid, "SPY", position=1.0, market_price=float(tick), event_time=now)
                for conid in range(1000, 1020)
            )
            writer.flush()

    def guarded(target: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        return threading.Thread(target=run)

    threads = [guarded(batch), guarded(streaming)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    book = _book(lake)
    assert book.height == 220
    assert book.filter(pl.col("source") == "batch")["position"].unique().to_list() == [6.0]
    assert book.filter(pl.col("source") == "stream")["market_price"].unique().to_list() == [11.0]
    assert book.equals(_full_rebuild(lake))


def test_positions_stays_compact_and_checkpointed(lake: Lake) -> None:
    root, options = lake.root, lake.options
    for conid in range(1, 13):  # 12 merges, each inserting a row into its own new file
        write_rows(root, "queued_positions", [aged_row("A", conid, 1.0, 1, "batch")], options)
    table = DeltaTable(lake.uri("positions"), storage_options=options)
    assert len(table.file_uris()) <= COMPACT_ABOVE_FILES
    assert table.metadata().configuration["delta.checkpointInterval"] == "10"
    assert any(name.endswith(".checkpoint.parquet") for name in lake.files("positions"))
    assert read_positions(root, options).height == 12


def test_apply_to_positions_replays_rows_and_refuses_bad_ones_whole(lake: Lake) -> None:
    root, options = lake.root, lake.options
    rows = [
        aged_row("A", 1, 2.0, 5, "stream"),
        aged_row("A", 1, 3.0, 1, "stream"),
        aged_row("A", 2, 1.0, 1, "batch"),
    ]
    assert apply_to_positions(root, rows, options) == 2  # newest of the two (A, 1) rows, plus (A, 2)
    assert _book(lake)["position"].to_list() == [3.0, 1.0]
    assert apply_to_positions(root, [aged_row("A", 1, 9.0, 30, "batch")], options) == 0  # older: ignored
    bad = [aged_row("A", 3, 1.0, 0, "batch"), PositionRow("A", -5, "SPY", position=1.0)]
    with pytest.raises(InvalidRowError, match=r"positions row 1: conid=-5"):
        apply_to_positions(root, bad, options)
    assert _book(lake)["conid"].to_list() == [1, 2]


def test_growth_is_bounded_by_table_properties_and_the_writers_vacuum(lake: Lake) -> None:
    """Each merge rewrites the book's file: removed files must leave the log and the storage, not pile up."""
    root, options = lake.root, lake.options
    write_rows(root, "streamed_positions", [aged_row("A", 1, 1.0, 1, "stream")], options)
    enqueue(PositionQueue(root, options), 1, "SPY", account="A")
    config = {
        name: DeltaTable(lake.uri(name), storage_options=options).metadata().configuration
        for name in ("positions", "streamed_positions", "position_queue")
    }
    assert config["positions"]["delta.deletedFileRetentionDuration"] == "interval 15 minutes"
    assert config["positions"]["delta.logRetentionDuration"] == "interval 15 minutes"
    assert config["streamed_positions"]["delta.deletedFileRetentionDuration"] == "interval 1 hours"
    assert config["position_queue"]["delta.enableChangeDataFeed"] == "true"

    # A value someone chose is kept (here: files may go at once), and the writer's vacuum honours it.
    table = DeltaTable(lake.uri("positions"), storage_options=options)
    table.alter.set_table_properties({"delta.deletedFileRetentionDuration": "interval 0 seconds"})
    book = PositionsBook(root, options, vacuum_every=4)
    for n in range(1, 9):  # eight newer observations: eight rewrites of the book's file
        book.apply(_history(lake, [aged_row("A", 1, float(n), -n, "stream")]))
    table = DeltaTable(lake.uri("positions"), storage_options=options)
    assert table.metadata().configuration["delta.deletedFileRetentionDuration"] == "interval 0 seconds"
    assert book.vacuumed >= 4
    data_files = [name for name in lake.files("positions") if name.endswith(".parquet") and "/" not in name]
    assert len(data_files) <= 4  # the live file plus those replaced since the last vacuum
    assert read_positions(root, options)["position"].to_list() == [8.0]


def _history(lake: Lake, rows: list[PositionRow]) -> pl.DataFrame:
    records = validated_records("positions", rows)
    return history_frame(records, spec_for("streamed_positions"), datetime.now(UTC))


def test_rows_a_crashed_writer_could_not_merge_reach_the_book(tmp_path) -> None:
    """History committed, the book merge failed, then the process died (its pending merge lived only in
    memory): the next heal brings the rows in, and afterwards reads only what is new."""
    import shutil

    from v6_positions.lake.errors import LakeError

    root = tmp_path / "lake"
    blocker = root / "positions"
    blocker.mkdir(parents=True)
    (blocker / "junk.bin").write_bytes(b"x")  # `positions` cannot be written
    writer = HistoryWriter(str(root), flush_interval_s=0.0)
    writer.extend([aged_row("A", 1, -5.0, 1, "stream"), aged_row("A", 2, 0.0, 1, "stream")])
    with pytest.raises(LakeError, match="positions: merge of 2 rows"):
        writer.flush()
    del writer  # the crash: what the writer kept for a retry is gone
    shutil.rmtree(blocker)
    write_rows(str(root), "queued_positions", [aged_row("A", 2, 3.0, 30, "batch")])  # older than the close
    assert read_positions(str(root))["conid"].to_list() == [2], "the book lacks the stream's rows"

    healed = heal_book(str(root))
    book = read_positions(str(root))
    assert book["conid"].to_list() == [1] and book["position"].to_list() == [-5.0]  # 2 closed: hidden
    assert healed.watermarks == {t: table_version(str(root), t) for t in HISTORY_TABLES}
    assert healed.full_reads == ["streamed_positions", "queued_positions"]  # no watermark yet: read whole

    assert heal_book(str(root)).rows_read == 0  # nothing new
    write_rows(str(root), "streamed_positions", [aged_row("A", 3, 1.0, 0, "stream")])
    again = heal_book(str(root))
    assert (again.rows_read, again.full_reads) == (1, [])  # only the new commit, from the change feed


def test_a_rebuild_never_undoes_a_newer_merge(lake: Lake) -> None:
    """refresh_positions merges (newer event wins) instead of overwriting the book."""
    root, options = lake.root, lake.options
    write_rows(root, "streamed_positions", [aged_row("A", 1, 1.0, 10, "stream")], options)
    # A newer row that reached the book but (say) not history yet: a rebuild must keep it.
    apply_to_positions(root, [aged_row("A", 1, 4.0, 0, "batch")], options)
    assert refresh_positions(root, options) == 1
    assert read_positions(root, options)["position"].to_list() == [4.0]
