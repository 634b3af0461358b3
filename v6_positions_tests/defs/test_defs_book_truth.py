"""The book never lies on the batch path: closes are events of now, only what a batch read is marked done, an
empty or foreign answer from IB closes nothing, and a payload without a time never overwrites newer rows."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
from deltalake import DeltaTable
from ib_async import Contract, Position
from lake_helpers import enqueue, queue_items

from v6_positions.config import Settings
from v6_positions.definitions import build_definitions
from v6_positions.defs.batch.partition_keys import contract_partition_key, queued_contracts
from v6_positions.defs.batch.schedule import RANGE_END_TAG, RANGE_START_TAG
from v6_positions.defs.jobs import BATCH_JOB_NAME
from v6_positions.defs.resources import StreamSupervision
from v6_positions.ib.account.book import AccountBook, mark_closed
from v6_positions.ib.account.holdings import apply_pnl, queue_item
from v6_positions.lake import queue_merges as merges
from v6_positions.lake.history import PositionRow, write_rows
from v6_positions.lake.positions import read_positions
from v6_positions.lake.queue import PositionQueue, QueueItem
from v6_positions.lake.tables import read_table
from v6_positions.simulator import SimulatorThread, load_book
from v6_positions.simulator.book_file import book_from_dict

ACCOUNT = "DU1"
CONTRACT = {"symbol": "SPY", "sec_type": "OPT", "right": "P", "strike": 480.0, "expiry": "20271217"}


def _contract(conid: int) -> Contract:
    return Contract(conId=conid, symbol="SPY", secType="OPT", multiplier="100", strike=480.0, right="P",
                    lastTradeDateOrContractMonth="20271217")  # fmt: skip


def _partition(conid: int, account: str = ACCOUNT) -> str:
    return contract_partition_key(account, conid, *CONTRACT.values())


def _batch(defs: dg.Definitions, instance: dg.DagsterInstance, keys: list[str]):
    instance.add_dynamic_partitions(queued_contracts.name, keys)
    return defs.resolve_job_def(BATCH_JOB_NAME).execute_in_process(
        instance=instance, tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}, raise_on_error=False
    )


def _defs(lake_root: str, port: int = 1, account: str = "") -> dg.Definitions:
    settings = Settings(lake_uri=lake_root, ib_port=port, ib_account=account, flush_interval_s=0.5)
    return build_definitions(settings, StreamSupervision(heartbeat_interval_s=0.5, progress_interval_s=1.0))


def _book_row(lake_root: str, conid: int) -> dict | None:
    rows = read_positions(lake_root).filter(pl.col("conid") == conid).to_dicts()
    return rows[0] if rows else None


def test_a_close_is_written_at_its_own_time_and_beats_newer_rows(lake_root, instance, add_stream_run):
    """A queued -5 put, valued a minute ago, is resized to -2 and then closed; a zero-line fetch row of 30 s
    ago is in the book. The stream's close must leave the book without the contract."""
    add_stream_run("127.0.0.1:1", heartbeat=time.time())  # stream alive: the batch uses its payloads
    account = AccountBook("", ("OPT",))
    account.rebuild([Position(ACCOUNT, _contract(7), -5, 150.0)])
    holding = account.holdings[(ACCOUNT, 7)]
    valued_at = datetime.now(UTC) - timedelta(seconds=60)
    assert apply_pnl(holding, -600.0, 150.0, 0.0, valued_at)
    write_rows(lake_root, "queued_positions", [
        PositionRow(account=ACCOUNT, conid=7, position=-5.0, market_price=1.1, source="batch",
                    event_time=datetime.now(UTC) - timedelta(seconds=30), **CONTRACT)
    ])  # fmt: skip
    queue = PositionQueue(lake_root)

    account.on_position(Position(ACCOUNT, _contract(7), -2, 150.0))  # resized ...
    change = account.on_position(Position(ACCOUNT, _contract(7), 0, 150.0))  # ... and closed
    assert change is not None and change.kind == "closed"
    mark_closed(change.holding)  # what the stream's sink does with a closed queued holding
    queue.insert_many([queue_item(change.holding, 2)])

    result = _batch(_defs(lake_root), instance, [_partition(7)])
    assert result.success
    assert _book_row(lake_root, 7) is None, "a closed position is not in the book"
    (item,) = queue_items(queue)
    assert (item.status, item.position) == ("done", 0.0)


def test_a_requeue_during_a_batch_is_not_marked_done_unseen(lake_root, instance, add_stream_run):
    """The stream re-queues a contract (the close) after the batch read the queue: the close stays pending
    and the next batch writes it."""
    add_stream_run("127.0.0.1:1", heartbeat=time.time())
    queue = PositionQueue(lake_root)
    now = datetime.now(UTC)
    enqueue(queue, 8, account=ACCOUNT, position=-2.0, market_price=1.0, payload_time=now, **CONTRACT)
    original_due = PositionQueue.due

    def due_then_stream_requeues(self, *args, **kwargs):
        # The stream stamps its close, the batch reads the queue, then the stream's commit lands (a MERGE
        # retried after a conflict keeps its stamp): stamped before the read, committed after it.
        close = QueueItem(account=ACCOUNT, conid=8, position=0.0, market_value=0.0,
                          payload_time=datetime.now(UTC), **CONTRACT)  # fmt: skip
        stamped = merges.insert_source([close], datetime.now(UTC))
        read = original_due(self, *args, **kwargs)
        merges.merge_insert(DeltaTable(f"{lake_root}/position_queue"), stamped)
        return read

    PositionQueue.due = due_then_stream_requeues  # type: ignore[method-assign]
    try:
        first = _batch(_defs(lake_root), instance, [_partition(8)])
    finally:
        PositionQueue.due = original_due  # type: ignore[method-assign]
    assert first.success
    assert _book_row(lake_root, 8) is not None  # the batch wrote what it read: -2
    (item,) = queue_items(queue)
    assert (item.status, item.position) == ("pending", 0.0), "the close was not marked done unseen"

    assert _batch(_defs(lake_root), instance, [_partition(8)]).success
    assert _book_row(lake_root, 8) is None


def test_a_payload_without_a_time_never_overwrites_newer_rows(lake_root, instance, add_stream_run):
    """A streamed leg (priced a second ago) is cancelled and queued with its position but no valuation; with
    no gateway to fetch from, the batch must not write it as current (it would blank the prices)."""
    add_stream_run("127.0.0.1:1", heartbeat=time.time())
    write_rows(lake_root, "streamed_positions", [
        PositionRow(account=ACCOUNT, conid=9, position=-1.0, market_price=2.5, bid=2.4, ask=2.6,
                    source="stream", event_time=datetime.now(UTC) - timedelta(seconds=1), **CONTRACT)
    ])  # fmt: skip
    enqueue(PositionQueue(lake_root), 9, account=ACCOUNT, position=-1.0, **CONTRACT)
    result = _batch(_defs(lake_root), instance, [_partition(9)])
    assert not result.success  # the contract could not be refreshed: the run says so, and retries later
    row = _book_row(lake_root, 9)
    assert row is not None and (row["source"], row["market_price"]) == ("stream", 2.5)
    (item,) = queue_items(PositionQueue(lake_root))
    assert item.status == "failed" and "no valuation time" in (item.last_error or "")


def _empty_account_sim() -> SimulatorThread:
    """A gateway whose login manages DU1, and DU1 holds nothing (or has not synced yet)."""
    book = book_from_dict({"accounts": [ACCOUNT], "underlyings": [{"symbol": "SPY", "price": 500.0}],
                           "positions": []})  # fmt: skip
    return SimulatorThread(book)


def test_an_empty_answer_from_ib_closes_nothing(lake_root, instance):
    """No stream is alive, so the batch fetches; IB lists no position for the account. The queued contracts
    keep their rows (from their payloads): an empty answer is not evidence of a close."""
    queue = PositionQueue(lake_root)
    valued = datetime.now(UTC) - timedelta(seconds=20)
    for conid in (11, 12):
        enqueue(
            queue, conid, account=ACCOUNT, position=-3.0, market_price=1.0, payload_time=valued, **CONTRACT
        )
    with _empty_account_sim() as sim:
        result = _batch(_defs(lake_root, sim.port), instance, [_partition(11), _partition(12)])
        assert sim.stats()["max_lines_in_use"] == 0
    assert result.success
    history = read_table(lake_root, "queued_positions")
    assert sorted(history["position"].to_list()) == [-3.0, -3.0], "nothing was closed"
    assert sorted(read_positions(lake_root)["conid"].to_list()) == [11, 12]


def test_a_wrong_account_fails_the_batch_naming_the_variable_and_writes_nothing(lake_root, instance):
    queue = PositionQueue(lake_root)
    held = [key for key in load_book("demo").positions][:3]
    for account, conid in held:
        enqueue(queue, conid, account=account, position=1.0, **CONTRACT)  # no valuation: the batch fetches
    keys = [_partition(conid, account) for account, conid in held]
    with SimulatorThread(load_book("demo")) as sim:
        result = _batch(_defs(lake_root, sim.port, account="DU_TYPO"), instance, keys)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "V6_IB_ACCOUNT='DU_TYPO' is not managed" in failure.step_failure_data.user_failure_data.description
    assert read_table(lake_root, "queued_positions").is_empty()
    assert {item.status for item in queue_items(queue)} == {"pending"}, "nothing marked: retried once fixed"
