"""PositionQueue semantics on a real table: idempotent upserts, ordering, marks and retries."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from deltalake import DeltaTable
from lake_helpers import Lake, enqueue, queue_items, queue_version

from v6_positions.lake import queue_merges as merges
from v6_positions.lake.queue import PositionQueue, QueueItem
from v6_positions.lake.tables import read_table


def _queue(lake: Lake, **kwargs: object) -> PositionQueue:
    return PositionQueue(lake.root, lake.options, **kwargs)


def test_insert_is_an_idempotent_upsert_keeping_payload_and_best_priority(lake: Lake) -> None:
    queue = _queue(lake)
    enqueue(
        queue, 1, "SPY", 2,
        account="A", right="C", strike=500.0, expiry="20261218", position=3.0, market_price=1.5,
    )
    first = queue_items(queue)[0]
    enqueue(queue, 1, "SPY", 0, account="A", market_price=1.75)  # position None keeps 3.0
    enqueue(queue, 1, "SPY", 2, account="A")  # worse priority does not demote
    rows = read_table(lake.root, "position_queue", lake.options)
    assert rows.height == 1
    (item,) = queue_items(queue)
    assert (item.priority, item.position, item.market_price, item.strike) == (0, 3.0, 1.75, 500.0)
    assert item.queued_at == first.queued_at  # still the same wait: age is kept
    assert item.status == "pending" and queue.backlog().due == 1


def test_same_conid_in_two_accounts_are_two_rows(lake: Lake) -> None:
    queue = _queue(lake)
    enqueue(queue, 1, "SPY", account="A")
    enqueue(queue, 1, "SPY", account="B")
    assert queue.keys() == [("A", 1), ("B", 1)]


def test_insert_many_is_one_commit_and_dedupes_last_wins(lake: Lake) -> None:
    queue = _queue(lake)
    enqueue(queue, 1, "SPY", account="A")
    version = queue_version(queue)
    items: list[QueueItem | dict] = [
        QueueItem(account="A", conid=c, symbol="SPY", position=1.0) for c in range(1, 3001)
    ]
    items.append({"account": "A", "conid": 5, "symbol": "SPY", "position": 9.0, "priority": 1})
    items.append(QueueItem(account="A", conid=5, symbol="SPY", market_price=2.0))
    assert queue.insert_many(items) == 3000
    assert queue_version(queue) == version + 1
    rows = read_table(lake.root, "position_queue", lake.options)
    assert rows.height == 3000 and rows["conid"].n_unique() == 3000
    five = rows.filter(pl.col("conid") == 5).row(0, named=True)
    assert (five["position"], five["market_price"], five["priority"]) == (9.0, 2.0, 1)
    assert queue.insert_many([]) == 0 and queue_version(queue) == version + 1


def test_due_orders_by_priority_then_age(lake: Lake) -> None:
    queue = _queue(lake)
    enqueue(queue, 10, "A", 2)
    enqueue(queue, 11, "B", 1)
    enqueue(queue, 12, "C", 2)
    enqueue(queue, 13, "D", 0)
    enqueue(queue, 14, "E", 1)
    assert [i.conid for i in queue.due()] == [13, 11, 14, 10, 12]
    assert [i.conid for i in queue.due(2)] == [13, 11]
    assert [i.conid for i in queue.due(priority=2)] == [10, 12]
    assert PositionQueue(f"{lake.root}/empty", lake.options).due() == []


def test_mark_done_and_failed_with_attempts(lake: Lake) -> None:
    queue = _queue(lake, max_attempts=2)
    queue.insert_many(QueueItem(account="A", conid=c, symbol="SPY") for c in (1, 2, 3))
    assert queue.mark_done([("A", 1), ("A", 1), ("A", 99)]) == 1
    assert queue.mark_failed([("A", 2)], "timeout") == 1
    assert queue.keys("done") == [("A", 1)] and queue.keys("failed") == [("A", 2)]
    assert queue.backlog().due == 2  # 3 pending + 2 retryable
    assert [i.conid for i in queue.due()] == [2, 3]
    queue.mark_failed([("A", 2)], "timeout again")
    failed = queue_items(queue, "failed")[0]
    assert (failed.attempts, failed.last_error) == (2, "timeout again")
    assert [i.conid for i in queue.due()] == [3]  # attempts exhausted
    assert queue.backlog().due == 1
    done = queue_items(queue, "done")[0]
    assert done.processed_at is not None and done.attempts == 0
    with pytest.raises(ValueError, match="status"):
        queue.keys("weird")


def test_requeue_after_done_starts_a_new_wait(lake: Lake) -> None:
    queue = _queue(lake)
    enqueue(queue, 1, "SPY", 0, account="A")
    queue.mark_failed([("A", 1)], "x")
    queue.mark_done([("A", 1)])
    before = queue_items(queue)[0]
    enqueue(queue, 1, "SPY", 2, account="A", position=4.0)
    after = queue_items(queue)[0]
    assert (after.status, after.attempts, after.priority, after.position) == ("pending", 0, 2, 4.0)
    assert after.queued_at > before.queued_at


def test_mark_done_can_skip_rows_requeued_meanwhile(lake: Lake) -> None:
    queue = _queue(lake)
    queue.insert_many(QueueItem(account="A", conid=c, symbol="SPY") for c in (1, 2))
    batch = queue.due()
    enqueue(queue, 2, "SPY", account="A", position=7.0)  # new payload while the batch was processed
    assert queue.mark_done([i.key for i in batch], as_read={i.key: i.updated_at for i in batch}) == 1
    assert queue.keys("done") == [("A", 1)] and queue.keys("pending") == [("A", 2)]


def test_a_requeue_stamped_before_the_read_but_committed_after_it_stays_pending(lake: Lake) -> None:
    """A writer stamps `updated_at` before its MERGE and keeps it through commit retries: its commit can
    land after a batch read the queue, with a time before that read. Only the exact row read is marked."""
    queue = _queue(lake)
    enqueue(queue, 1, "SPY", account="A", position=-5.0)
    close = QueueItem(account="A", conid=1, symbol="SPY", position=0.0)
    stamped = merges.insert_source([close], datetime.now(UTC))  # stamped now, committed later
    batch = queue.due()  # the batch reads -5 ...
    assert [i.position for i in batch] == [-5.0]
    merges.merge_insert(DeltaTable(f"{lake.root}/position_queue", storage_options=lake.options), stamped)
    assert queue.mark_done([i.key for i in batch], as_read={i.key: i.updated_at for i in batch}) == 0
    (row,) = queue_items(queue)
    assert (row.status, row.position) == ("pending", 0.0)  # ... and the close waits for the next batch


def test_a_resize_or_close_never_keeps_an_older_valuation_time(lake: Lake) -> None:
    queue = _queue(lake)
    valued_at = datetime(2026, 6, 1, 15, 0, tzinfo=UTC)
    enqueue(queue, 1, "SPY", account="A", position=-5.0, market_price=1.2, market_value=-600.0,
                 payload_time=valued_at)
    enqueue(queue, 1, "SPY", account="A", position=-5.0)  # same size, no new valuation: kept
    assert queue_items(queue)[0].payload_time == valued_at
    enqueue(queue, 1, "SPY", account="A", position=-2.0)  # resized, not yet valued: the old value is cleared
    (row,) = queue_items(queue)
    assert (row.position, row.market_value, row.payload_time) == (-2.0, None, None)
    closed_at = datetime.now(UTC)
    enqueue(queue, 1, "SPY", account="A", position=0.0, market_value=0.0, payload_time=closed_at)
    (row,) = queue_items(queue)
    assert (row.position, row.market_value, row.payload_time) == (0.0, 0.0, closed_at)
