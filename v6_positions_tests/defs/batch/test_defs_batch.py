"""The batch path without a gateway: queued payloads are committed, then the queue rows are marked done.

What the UI shows is read back from the instance: materialized / failed partitions as Dagster's partition
status computes them, and the metadata of each event.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
from batch_helpers import (
    ACCOUNT,
    GATEWAY,
    materialize_range,
    partition_status,
    positions_metadata,
    queue_and_partition,
    run_materializations,
    summary,
)
from lake_helpers import queue_items

from v6_positions.lake.book_heal import refresh_positions
from v6_positions.lake.history import PositionRow, write_rows
from v6_positions.lake.positions import read_positions
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.tables import read_table


def test_live_stream_payloads_are_committed_and_marked_done(make_defs, instance, lake_root, add_stream_run):
    add_stream_run(GATEWAY, heartbeat=time.time())  # stream alive: its payloads are current
    keys = queue_and_partition(lake_root, instance, {2001: 3.0, 2002: -1.0, 2003: 0.0})
    result = materialize_range(make_defs(), instance, keys)
    assert result.success
    batch = summary(instance, result)
    assert (batch["partitions"], batch["rows_written"], batch["from_queued_payload"]) == (3, 3, 3)
    assert PositionQueue(lake_root).backlog().due == 0
    assert set(read_table(lake_root, "queued_positions")["source"].to_list()) == {"batch"}
    assert sorted(read_positions(lake_root)["conid"].to_list()) == [2001, 2002]  # 0 = closed, dropped
    book = positions_metadata(instance, result)
    assert (book["rows"], book["batch_rows_written"], book["batch_failed"]) == (2, 3, 0)
    # One small event per committed contract, saying what it got; no per-key planned events.
    reported = run_materializations(instance, result.run_id)
    assert set(reported) == set(keys)
    assert reported[keys[0]]["source"] == "queued payload" and reported[keys[0]]["market_price"] == 1.25
    assert reported[keys[2]]["market_price"] is None  # the queued payload said: closed (position 0)
    assert reported[keys[0]]["age_s"] >= 0
    assert "latest_rows" not in reported[keys[0]]
    planned = instance.get_records_for_run(
        result.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ).records
    assert not [r for r in planned if r.event_log_entry.dagster_event.partition]
    assert partition_status(instance) == (set(keys), set())


def test_a_range_does_not_report_done_contracts_again(make_defs, instance, lake_root, add_stream_run):
    add_stream_run(GATEWAY, heartbeat=time.time())
    keys = queue_and_partition(lake_root, instance, {2001: 3.0, 2002: 1.0, 2003: 2.0})
    PositionQueue(lake_root).mark_done([(ACCOUNT, 2002)])
    result = materialize_range(make_defs(), instance, keys)
    batch = summary(instance, result)
    assert (batch["partitions"], batch["due"], batch["rows_written"], batch["not_due"]) == (3, 2, 2, 1)
    assert sorted(read_table(lake_root, "queued_positions")["conid"].to_list()) == [2001, 2003]
    assert set(run_materializations(instance, result.run_id)) == {keys[0], keys[2]}  # bridged: no event
    assert partition_status(instance) == ({keys[0], keys[2]}, set())


def test_failed_contracts_show_failed_and_bridged_done_ones_keep_their_state(
    make_defs, instance, lake_root, add_stream_run
):
    add_stream_run(GATEWAY, heartbeat=time.time())
    defs = make_defs(port=1)  # nothing listens: a zero-line fetch fails fast
    keys = queue_and_partition(lake_root, instance, {2001: 3.0, 2002: 1.0, 2003: 2.0, 2004: 4.0})
    first = materialize_range(defs, instance, keys)
    assert first.success and partition_status(instance) == (set(keys), set())
    # Next batch: 2001, 2004 re-queued with payloads, 2003 re-queued without one, 2002 stays done (bridged).
    PositionQueue(lake_root).insert_many(
        [
            {"account": ACCOUNT, "conid": 2001, "symbol": "IWM", "position": 5.0, "market_price": 2.5,
             "payload_time": datetime.now(UTC)},
            {"account": ACCOUNT, "conid": 2003, "symbol": "IWM"},
            {"account": ACCOUNT, "conid": 2004, "symbol": "IWM", "position": 6.0, "market_price": 3.5,
             "payload_time": datetime.now(UTC)},
        ]
    )
    _drop_payload(lake_root, 2003)
    second = materialize_range(defs, instance, keys)
    assert not second.success  # a contract could not be refreshed: the run says so
    assert set(run_materializations(instance, second.run_id)) == {keys[0], keys[3]}
    materialized, failed = partition_status(instance)
    assert failed == {keys[2]}  # only the contract that failed
    assert materialized == {keys[0], keys[1], keys[3]}  # 2002 bridged: still materialized from the first run
    batch = summary(instance, second)
    assert (batch["due"], batch["rows_written"], batch["failed"], batch["not_due"]) == (3, 2, 1, 1)
    queue = PositionQueue(lake_root)
    (failed_item,) = queue_items(queue, "failed")
    assert failed_item.conid == 2003 and failed_item.attempts == 1 and failed_item.last_error
    assert queue.backlog().due == 1  # failed but retryable: the next batch tries again
    assert read_positions(lake_root).filter(pl.col("conid") == 2001)["position"].to_list() == [5.0]


def _drop_payload(lake_root: str, conid: int) -> None:
    """The stream queued this contract without any payload (as for a position it never valued)."""
    from deltalake import DeltaTable

    DeltaTable(f"{lake_root}/position_queue").update(
        updates={"position": "CAST(NULL AS DOUBLE)", "payload_time": "CAST(NULL AS TIMESTAMP)"},
        predicate=f"conid = {conid}",
    )


def test_queue_rows_stay_pending_when_the_write_fails(make_defs, instance, lake_root, add_stream_run):
    add_stream_run(GATEWAY, heartbeat=time.time())
    keys = queue_and_partition(lake_root, instance, {2001: 3.0, 2002: -1.0})
    (Path(lake_root) / "queued_positions").write_text("not a Delta table")  # the commit cannot succeed
    result = materialize_range(make_defs(), instance, keys)
    assert not result.success
    queue = PositionQueue(lake_root)
    assert queue.backlog().due == 2
    assert not queue.keys(status="done")
    assert instance.get_latest_materialization_event(dg.AssetKey("queued_positions")) is None


def test_the_book_is_kept_by_the_batch_not_rebuilt_from_history(
    make_defs, instance, lake_root, add_stream_run
):
    add_stream_run(GATEWAY, heartbeat=time.time())
    rng = random.Random(11)
    conids = list(range(3000, 3040))
    keys = queue_and_partition(lake_root, instance, {c: float(rng.randint(-5, 5)) for c in conids})
    # Streamed history of some of the same contracts, older and newer than what the batch will write.
    now = datetime.now(UTC)
    streamed = [
        PositionRow(
            account=ACCOUNT, conid=c, symbol="IWM", position=float(rng.randint(1, 9)), market_price=9.0,
            source="stream", event_time=now + timedelta(seconds=rng.choice([-3600, 3600])),
        )
        for c in rng.sample(conids, 15)
    ]  # fmt: skip
    write_rows(lake_root, "streamed_positions", streamed)
    for _ in range(2):  # two batches, the second over a random re-queued subset
        assert materialize_range(make_defs(), instance, keys).success
        PositionQueue(lake_root).insert_many(
            {
                "account": ACCOUNT, "conid": c, "symbol": "IWM", "position": float(rng.randint(-5, 5)),
                "payload_time": datetime.now(UTC),
            }
            for c in rng.sample(conids, 10)
        )
    kept = _book(read_positions(lake_root))
    refresh_positions(lake_root)  # the full rebuild from both history tables, for comparison
    assert kept.equals(_book(read_positions(lake_root)))
    assert kept.height > 0


def _book(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select("account", "conid", "position", "market_price", "source", "event_time").sort(
        "account", "conid"
    )
