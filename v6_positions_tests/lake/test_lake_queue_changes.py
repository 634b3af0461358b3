"""PositionQueue for the clean-up and the O(new rows) sensor: due, remove, closed_or_expired, changes."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from deltalake import DeltaTable
from lake_helpers import Lake, enqueue, queue_items, queue_version

from v6_positions.lake.queue import PositionQueue, QueueItem
from v6_positions.lake.schemas import POSITION_QUEUE
from v6_positions.lake.tables import conform


def _queue(lake: Lake, **kwargs: object) -> PositionQueue:
    return PositionQueue(lake.root, lake.options, **kwargs)


def _items(conids: range, **fields: object) -> list[QueueItem]:
    return [QueueItem(account="A", conid=c, symbol="SPY", **fields) for c in conids]


def test_due_returns_pending_and_retryable_rows_most_urgent_first(lake: Lake) -> None:
    queue = _queue(lake, max_attempts=1)
    assert queue.due() == []
    for conid, priority in ((10, 2), (11, 1), (12, 2), (13, 0), (14, 1), (15, 2), (16, 2)):
        enqueue(queue, conid, "SPY", priority, account="A")
    queue.mark_done([("A", 15)])
    queue.mark_failed([("A", 16)], "no data")  # attempts 1 = max_attempts: no longer due
    queue.mark_failed([("A", 12)], "no data")
    enqueue(queue, 12, "SPY", account="A")  # re-queued while failed: stays in its wait, due again
    assert [i.conid for i in queue.due()] == [13, 11, 14, 10, 12]
    assert [i.conid for i in queue.due(2)] == [13, 11]
    assert queue.due(0) == []
    assert [i.conid for i in queue.due(2**62)] == [13, 11, 14, 10, 12]  # "everything", as old callers ask
    assert queue.backlog().due == 5
    assert all(isinstance(item, QueueItem) and item.symbol == "SPY" for item in queue.due())
    with pytest.raises(ValueError, match="limit=-1"):
        queue.due(-1)


def test_due_of_some_keys_and_the_backlog_aggregate(lake: Lake) -> None:
    queue = _queue(lake, max_attempts=1)
    assert queue.backlog().due == 0 and queue.backlog().oldest_queued_at is None
    queue.insert_many(_items(range(1, 6)))
    enqueue(queue, 1, "SPY", account="B")  # same conid, another account
    queue.mark_done([("A", 2)])
    wanted = {("A", 1), ("A", 2), ("A", 4), ("C", 9)}  # (A, 2) is done, (C, 9) is not queued
    assert [item.key for item in queue.due(keys=wanted)] == [("A", 1), ("A", 4)]
    assert queue.due(keys=set()) == []
    assert queue.due_keys() == {("A", 1), ("A", 3), ("A", 4), ("A", 5), ("B", 1)}
    backlog = queue.backlog()
    oldest = min(item.queued_at for item in queue.due() if item.queued_at is not None)
    assert (backlog.due, backlog.oldest_queued_at) == (5, oldest)


def test_closed_or_expired_and_remove(lake: Lake) -> None:
    queue = _queue(lake)
    queue.insert_many(
        [
            QueueItem(account="A", conid=1, symbol="SPY", expiry="20260619", position=1.0),  # expired
            QueueItem(
                account="A", conid=2, symbol="SPY", expiry="20260620", position=0.0
            ),  # closed, not done
            QueueItem(account="A", conid=3, symbol="SPY", expiry="20261218", position=0.0),  # closed and done
            QueueItem(
                account="A", conid=4, symbol="SPY", expiry="20261218", position=2.0
            ),  # done, still held
            QueueItem(account="A", conid=5, symbol="SPY", position=None),  # nothing known: kept
            QueueItem(account="B", conid=1, symbol="SPY", expiry="20260620", position=1.0),  # expires today
        ]
    )
    queue.mark_done([("A", 3), ("A", 4), ("A", 5)])
    today = date(2026, 6, 20)
    assert [i.key for i in queue.closed_or_expired_items(today)] == [("A", 1), ("A", 3)]
    items = queue.closed_or_expired_items(today)  # with the contract fields that name their partitions
    assert [(i.key, i.symbol, i.expiry) for i in items] == [
        (("A", 1), "SPY", "20260619"),
        (("A", 3), "SPY", "20261218"),
    ]
    ghost = QueueItem(account="A", conid=99, symbol="SPY")
    assert queue.remove([*items, ghost]) == 2
    assert queue.keys() == [("A", 2), ("A", 4), ("A", 5), ("B", 1)]
    assert [i.key for i in queue.closed_or_expired_items(today)] == []
    assert queue.remove([]) == 0
    assert PositionQueue(f"{lake.root}/empty", lake.options).remove([ghost]) == 0


def test_remove_keeps_a_row_requeued_since_it_was_read(lake: Lake) -> None:
    """The clean-up reads a closed row, the contract reopens, then the delete runs: the reopened row stays."""
    queue = _queue(lake)
    enqueue(queue, 1, "SPY", account="A", expiry="20261218", position=0.0)
    queue.mark_done([("A", 1)])
    (closed,) = queue.closed_or_expired_items(date(2026, 6, 20))
    enqueue(queue, 1, "SPY", account="A", expiry="20261218", position=3.0)  # reopened meanwhile
    assert queue.remove([closed]) == 0
    (row,) = queue_items(queue)
    assert (row.status, row.position) == ("pending", 3.0)


def test_changes_since_returns_only_what_changed_after_the_cursor(lake: Lake) -> None:
    queue = _queue(lake)
    version, rows = queue.changes_since(-1)
    assert version == -1 and rows.is_empty()
    queue.insert_many(_items(range(1, 101), position=1.0))
    version, everything = queue.changes_since(-1)
    assert version == queue_version(queue) and everything.height == 100
    assert everything.schema == POSITION_QUEUE.polars_schema

    queue.insert_many(_items(range(100, 103), position=2.0))  # one update (100), two new keys
    queue.mark_done([("A", 5)])
    # A removed key is not a change to report.
    queue.remove([i for i in queue_items(queue) if i.conid in (7, 101)])
    cursor, changed = queue.changes_since(version)
    assert cursor == queue_version(queue)
    assert changed["conid"].to_list() == [5, 100, 102]
    row = {r["conid"]: r for r in changed.iter_rows(named=True)}
    assert (row[5]["status"], row[100]["position"], row[102]["status"]) == ("done", 2.0, "pending")
    again, nothing = queue.changes_since(cursor)
    assert again == cursor and nothing.is_empty() and nothing.schema == POSITION_QUEUE.polars_schema
    with pytest.raises(ValueError, match="version=-2"):
        queue.changes_since(-2)
    # A cursor ahead of the table (the queue was recreated): one full read resynchronises the sensor.
    ahead, rows = queue.changes_since(cursor + 50)
    assert ahead == cursor and rows.height == queue.backlog().due + 1  # every row; (A, 5) is done


def test_changes_since_on_a_queue_created_before_the_change_feed(lake: Lake) -> None:
    # A queue table from before this version (no change data feed): created with row 1, then row 2 appended.
    def old_rows(conid: int) -> pl.DataFrame:
        frame = pl.DataFrame({"account": ["A"], "conid": [conid], "symbol": ["SPY"], "status": ["pending"]})
        return conform(frame, POSITION_QUEUE)

    old_rows(1).write_delta(lake.uri("position_queue"), storage_options=lake.options)
    old_rows(2).write_delta(lake.uri("position_queue"), mode="append", storage_options=lake.options)
    table = DeltaTable(lake.uri("position_queue"), storage_options=lake.options)
    assert "delta.enableChangeDataFeed" not in table.metadata().configuration
    queue = PositionQueue(lake.root, lake.options)
    enqueue(queue, 3, "SPY", account="A")  # the first use turns the feed on (version 2), then merges (3)
    table = DeltaTable(lake.uri("position_queue"), storage_options=lake.options)
    assert table.metadata().configuration["delta.enableChangeDataFeed"] == "true"
    # Commits from before the feed still count: the append of row 2 (version 1) is a change after version 0.
    version, rows = queue.changes_since(0)
    assert version == queue_version(queue) == 3 and rows["conid"].to_list() == [2, 3]
    assert queue.changes_since(-1)[1]["conid"].to_list() == [1, 2, 3]
    assert queue.changes_since(1)[1]["conid"].to_list() == [3]  # from the version that turned it on: the feed
    enqueue(queue, 4, "SPY", account="A")
    assert queue.changes_since(version)[1]["conid"].to_list() == [4]
