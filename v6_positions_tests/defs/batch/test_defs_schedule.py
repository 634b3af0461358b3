"""The batch schedule: pending partitions become range runs; nothing pending is a skip with its reason."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import dagster as dg

from v6_positions.defs.batch.partition_events import DEFER_EVENTS_TAG
from v6_positions.defs.batch.partition_keys import contract_partition_key, queued_contracts
from v6_positions.defs.batch.schedule import RANGE_END_TAG, RANGE_START_TAG, plan_ranges
from v6_positions.defs.jobs import BATCH_JOB_NAME
from v6_positions.lake.queue import PositionQueue

ACCOUNT = "DU1000001"


def evaluate(defs: dg.Definitions, instance: dg.DagsterInstance):
    schedule = defs.resolve_schedule_def("queued_positions_batch")
    # The context opens its own instance from the ref: `with` closes it (on Postgres its connections too).
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=datetime(2026, 11, 26, 9, 30, tzinfo=UTC),
        resources=defs.resources,
    ) as context:
        return schedule.evaluate_tick(context)


def queue_contracts(lake_root: str, conids: list[int]) -> list[str]:
    PositionQueue(lake_root).insert_many(
        {
            "account": ACCOUNT,
            "conid": c,
            "symbol": "SPY",
            "right": "C",
            "strike": 600.0 + c,
            "expiry": "20261218",
            "position": 1.0,
        }
        for c in conids
    )
    return [contract_partition_key(ACCOUNT, c, "SPY", "OPT", "C", 600.0 + c, "20261218") for c in conids]


def test_nothing_queued_is_a_skip_with_a_reason(make_defs, instance):
    result = evaluate(make_defs(), instance)
    assert not result.run_requests
    assert result.skip_message == "no pending queued contracts"


def test_pending_contracts_without_partitions_wait_for_the_sensor(make_defs, instance, lake_root):
    queue_contracts(lake_root, [1, 2])
    result = evaluate(make_defs(), instance)
    assert not result.run_requests
    assert "no partition yet" in result.skip_message


def test_pending_partitions_become_one_range_run(make_defs, instance, lake_root):
    keys = queue_contracts(lake_root, [1, 2, 3, 4])
    instance.add_dynamic_partitions(queued_contracts.name, keys)
    PositionQueue(lake_root).mark_done([(ACCOUNT, 2)])  # done in the middle: bridged, not split
    result = evaluate(make_defs(), instance)
    assert len(result.run_requests) == 1
    tags = result.run_requests[0].tags
    assert (tags[RANGE_START_TAG], tags[RANGE_END_TAG]) == (keys[0], keys[3])
    assert tags["v6/due"] == "3"
    # The run reports its partitions itself: only committed ones materialized, none for the bridged key.
    assert tags[DEFER_EVENTS_TAG] == "true"
    assert result.run_requests[0].run_key


def test_all_done_is_a_skip(make_defs, instance, lake_root):
    keys = queue_contracts(lake_root, [1, 2])
    instance.add_dynamic_partitions(queued_contracts.name, keys)
    PositionQueue(lake_root).mark_done([(ACCOUNT, 1), (ACCOUNT, 2)])
    assert evaluate(make_defs(), instance).skip_message == "no pending queued contracts"


def test_ranges_split_on_long_done_gaps_and_on_size():
    keys = [contract_partition_key(ACCOUNT, c, "SPY", "OPT", "C", 600.0, "20261218") for c in range(1, 21)]
    due = {(ACCOUNT, c) for c in (1, 2, 3, 10, 11, 20)}
    ranges = plan_ranges(keys, due, max_gap=5, max_size=100)
    assert [(r.start, r.end, r.due) for r in ranges] == [
        (keys[0], keys[2], 3),
        (keys[9], keys[10], 2),
        (keys[19], keys[19], 1),
    ]
    ranges = plan_ranges(keys, due, max_gap=100, max_size=3)
    assert [r.size for r in ranges] == [3, 2, 1]
    assert sum(r.due for r in ranges) == len(due)
    assert plan_ranges(keys, due, max_gap=100, max_size=100)[0].size == 20


def test_skips_while_a_batch_run_is_in_progress(make_defs, instance, lake_root):
    keys = queue_contracts(lake_root, [1])
    instance.add_dynamic_partitions(queued_contracts.name, keys)
    running = dg.DagsterRun(
        job_name=BATCH_JOB_NAME, run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED
    )
    instance.add_run(running)
    assert "still in progress" in evaluate(make_defs(), instance).skip_message
