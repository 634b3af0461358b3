"""The batch path without a gateway: queued payloads are committed, then the queue rows are marked done."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg

from v6_positions.defs.jobs import BATCH_JOB_NAME
from v6_positions.defs.partitions import contract_partition_key, queued_contracts
from v6_positions.defs.schedules import RANGE_END_TAG, RANGE_START_TAG
from v6_positions.lake.positions import read_positions
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.tables import read_table

GATEWAY = "127.0.0.1:4002"
ACCOUNT = "DU1000001"


def queue_and_partition(
    lake_root: str, instance: dg.DagsterInstance, payloads: dict[int, float | None]
) -> list[str]:
    PositionQueue(lake_root).insert_many(
        {
            "account": ACCOUNT,
            "conid": conid,
            "symbol": "IWM",
            "right": "P",
            "strike": 200.0,
            "expiry": "20261218",
            "position": position,
            "market_price": 1.25 if position else None,
        }
        for conid, position in payloads.items()
    )
    keys = [contract_partition_key(ACCOUNT, c, "IWM", "OPT", "P", 200.0, "20261218") for c in payloads]
    instance.add_dynamic_partitions(queued_contracts.name, keys)
    return keys


def materialize_range(defs: dg.Definitions, instance: dg.DagsterInstance, keys: list[str]):
    return defs.resolve_job_def(BATCH_JOB_NAME).execute_in_process(
        instance=instance,
        tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]},
        raise_on_error=False,
    )


def metadata(result, asset: str) -> dict[str, object]:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def test_live_stream_payloads_are_committed_and_marked_done(make_defs, instance, lake_root, add_stream_run):
    add_stream_run(GATEWAY, heartbeat=time.time())  # stream alive: its payloads are current
    keys = queue_and_partition(lake_root, instance, {2001: 3.0, 2002: -1.0, 2003: 0.0})
    result = materialize_range(make_defs(), instance, keys)
    assert result.success
    batch = metadata(result, "queued_positions")
    assert (batch["partitions"], batch["rows_written"], batch["from_queued_payload"]) == (3, 3, 3)
    assert batch["zero_line_fetch_error"] == ""  # no connection was attempted
    assert PositionQueue(lake_root).pending_count() == 0
    assert set(read_table(lake_root, "queued_positions")["source"].to_list()) == {"batch"}
    assert sorted(read_positions(lake_root)["conid"].to_list()) == [2001, 2002]  # 0 = closed, dropped
    assert metadata(result, "positions")["rows"] == 2


def test_a_range_skips_contracts_already_done(make_defs, instance, lake_root, add_stream_run):
    add_stream_run(GATEWAY, heartbeat=time.time())
    keys = queue_and_partition(lake_root, instance, {2001: 3.0, 2002: 1.0, 2003: 2.0})
    PositionQueue(lake_root).mark_done([(ACCOUNT, 2002)])
    batch = metadata(materialize_range(make_defs(), instance, keys), "queued_positions")
    assert (batch["partitions"], batch["due"], batch["rows_written"]) == (3, 2, 2)
    assert sorted(read_table(lake_root, "queued_positions")["conid"].to_list()) == [2001, 2003]


def test_without_payload_or_gateway_the_row_stays_queued(make_defs, instance, lake_root, add_stream_run):
    add_stream_run(GATEWAY, heartbeat=time.time())
    keys = queue_and_partition(lake_root, instance, {2001: 3.0, 2002: None})
    defs = make_defs(port=1)  # nothing listens: the zero-line fetch fails fast
    batch = metadata(materialize_range(defs, instance, keys), "queued_positions")
    assert (batch["rows_written"], batch["failed"]) == (1, 1)
    assert batch["zero_line_fetch_error"]
    queue = PositionQueue(lake_root)
    assert queue.keys(status="done") == [(ACCOUNT, 2001)]
    (failed,) = queue.items(status="failed")
    assert failed.conid == 2002 and failed.attempts == 1
    assert queue.pending_count() == 1  # failed but retryable: the next batch tries again


def test_queue_rows_stay_pending_when_the_write_fails(make_defs, instance, lake_root, add_stream_run):
    add_stream_run(GATEWAY, heartbeat=time.time())
    keys = queue_and_partition(lake_root, instance, {2001: 3.0, 2002: -1.0})
    (Path(lake_root) / "queued_positions").write_text("not a Delta table")  # the commit cannot succeed
    result = materialize_range(make_defs(), instance, keys)
    assert not result.success
    queue = PositionQueue(lake_root)
    assert queue.pending_count() == 2
    assert not queue.keys(status="done")
    assert instance.get_latest_materialization_event(dg.AssetKey("queued_positions")) is None
