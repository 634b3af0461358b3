"""Reconciliation on real tables: a corrupted book is found out and repaired; an answer that proves nothing
(empty for an account, or older than a book row) changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
from deltalake import DeltaTable
from lake_helpers import Lake, aged_row

from v6_positions.lake.book_heal import heal_book
from v6_positions.lake.history import write_rows
from v6_positions.lake.positions import apply_to_positions, read_positions
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.reconcile import BrokerPositions, compare, reconcile_book
from v6_positions.lake.rows import QueueItem
from v6_positions.lake.tables import read_table


def _broker(held: dict[tuple[str, int], float], at: datetime | None = None, **kwargs) -> BrokerPositions:
    items = {
        key: QueueItem(account=key[0], conid=key[1], symbol="SPY", position=size, average_cost=150.0)
        for key, size in held.items()
    }
    accounts = kwargs.pop("accounts", frozenset(account for account, _ in held))
    return BrokerPositions(answered_at=at or datetime.now(UTC), accounts=accounts, held=items, **kwargs)


def _book(lake: Lake) -> dict[tuple[str, int], float]:
    book = read_positions(lake.root, lake.options)
    return {(a, c): p for a, c, p in book.select("account", "conid", "position").iter_rows()}


def test_a_corrupted_book_is_found_and_repaired(lake: Lake) -> None:
    root, options = lake.root, lake.options
    held = {("A", c): float(c) for c in range(1, 6)}
    rows = [aged_row(a, c, p, 5, "batch") for (a, c), p in held.items()]
    write_rows(root, "queued_positions", rows, options)
    heal_book(root, options)  # the book holds all history (watermarks set); what follows is drift
    table = DeltaTable(lake.uri("positions"), storage_options=options)
    table.delete("conid = 1")  # a row lost
    table.update(updates={"position": "-9.0"}, predicate="conid = 2")  # a size gone wrong
    apply_to_positions(root, [aged_row("A", 77, 3.0, 5, "batch")], options)  # a position IB no longer holds
    # (history does not explain the lost row and the wrong size: only the broker can tell)

    outcome = reconcile_book(root, _broker(held), options)

    assert not outcome.matches
    counts = [outcome.count(kind) for kind in ("missing", "wrong_size", "ghost")]
    assert (outcome.matching, counts) == (3, [1, 1, 1])
    assert ("A", 77) not in _book(lake), "the ghost is closed"
    close = read_table(root, "queued_positions", options).filter(pl.col("conid") == 77).sort("event_time")
    assert close["source"].to_list()[-1] == "reconcile" and close["position"].to_list()[-1] == 0.0
    queued = {item.conid: item for item in PositionQueue(root, options).due()}
    assert sorted(queued) == [1, 2]  # re-queued at top priority, with IB's size, unvalued (the batch fetches)
    requeued = {(i.priority, i.position, i.payload_time) for i in queued.values()}
    assert requeued == {(0, 1.0, None), (0, 2.0, None)}
    # Once the batch has written what IB holds, the same answer finds nothing.
    fresh = [aged_row("A", c, float(c), 0, "batch") for c in (1, 2)]
    write_rows(root, "queued_positions", fresh, options)
    assert reconcile_book(root, _broker(held), options).matches


def test_an_empty_answer_or_one_older_than_the_book_changes_nothing(lake: Lake) -> None:
    root, options = lake.root, lake.options
    write_rows(root, "queued_positions", [aged_row("A", c, 1.0, 5, "batch") for c in (1, 2)], options)
    heal_book(root, options)
    before = _book(lake)
    version = DeltaTable(lake.uri("positions"), storage_options=options).version()

    # IB listed nothing for account A (mistyped account, another login, not synced): not evidence.
    empty = reconcile_book(root, _broker({}, unverified_accounts=("A",)), options)
    assert not empty.matches and empty.unverified_book_rows == 2 and not empty.differences
    # An answer taken before the book's newest row of a contract does not judge that row.
    stale = _broker({("A", 1): 1.0}, at=datetime.now(UTC) - timedelta(minutes=10))
    outcome = compare(read_positions(root, options), stale)
    assert (outcome.too_new, outcome.differences) == (2, [])

    assert _book(lake) == before
    assert DeltaTable(lake.uri("positions"), storage_options=options).version() == version
    assert PositionQueue(root, options).due() == []
