"""The sensors: the supervisor launches, leaves a live run alone, replaces a dead one; the queue sensor adds
partitions once and observes the tables."""

from __future__ import annotations

import json
import time

import dagster as dg
from defs_helpers import apply_partitions, queue_tick, tick, wait_for

from v6_positions.defs.heartbeat import GATEWAY_TAG
from v6_positions.defs.partitions import queued_contracts
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.registry import StrategyRegistry

GATEWAY = "127.0.0.1:4002"


def test_launches_a_stream_run_when_none_exists(make_defs, instance):
    result = tick(make_defs(), instance)
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.tags[GATEWAY_TAG] == GATEWAY
    assert request.run_key and GATEWAY in request.run_key


def test_each_launch_has_its_own_run_key(make_defs, instance):
    first = tick(make_defs(), instance).run_requests[0].run_key
    second = tick(make_defs(), instance).run_requests[0].run_key
    assert first != second  # a reused run key would be dropped silently by the daemon


def test_leaves_a_run_with_a_fresh_heartbeat_alone(make_defs, instance, add_stream_run):
    run = add_stream_run(GATEWAY, heartbeat=time.time())
    result = tick(make_defs(), instance)
    assert not result.run_requests
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED


def test_a_stream_of_another_gateway_does_not_count(make_defs, instance, add_stream_run):
    add_stream_run("10.0.0.9:4001", heartbeat=time.time())
    assert len(tick(make_defs(), instance).run_requests) == 1


def test_stale_heartbeat_marks_the_run_failed_and_launches_another(make_defs, instance, add_stream_run):
    dead = add_stream_run(GATEWAY, heartbeat=time.time() - 120)
    result = tick(make_defs(stale_after_s=60), instance)
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert len(result.run_requests) == 1
    failure = instance.all_logs(dead.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert "presumed dead" in failure[0].message


def test_a_run_without_heartbeat_gets_the_startup_grace(make_defs, instance, add_stream_run):
    starting = add_stream_run(GATEWAY)
    assert not tick(make_defs(startup_grace_s=60), instance).run_requests
    # The run record's creation time has storage precision: poll (bounded) until the grace has surely passed.
    no_grace = make_defs(startup_grace_s=0.5)
    result = wait_for(lambda: (r := tick(no_grace, instance)).run_requests and r, 5, "the grace to run out")
    assert instance.get_run_by_id(starting.run_id).status == dg.DagsterRunStatus.FAILURE
    assert len(result.run_requests) == 1


def test_waits_for_the_backoff_after_a_run_failed_by_itself(make_defs, instance, add_stream_run):
    failed = add_stream_run(GATEWAY)
    instance.report_run_failed(failed)  # the run's own failure, e.g. a bug at start-up
    assert not tick(make_defs(restart_backoff_s=600), instance).run_requests
    assert len(tick(make_defs(restart_backoff_s=0), instance).run_requests) == 1


def test_new_queue_keys_become_partitions_once(make_defs, instance, lake_root):
    defs = make_defs()
    queue = PositionQueue(lake_root)
    queue.insert_many(
        [
            {
                "account": "DU1000001",
                "conid": 1001,
                "symbol": "SPY",
                "right": "C",
                "strike": 600.0,
                "expiry": "20261218",
                "position": 2.0,
            },
            {"account": "DU1000001", "conid": 1002, "symbol": "BRK B", "sec_type": "STK", "position": 10.0},
        ]
    )
    first = queue_tick(defs, instance)
    assert sorted(apply_partitions(instance, first)) == [
        "DU1000001-BRK_B-STK-1002",
        "DU1000001-SPY-20261218-C-600-1001",
    ]
    again = queue_tick(defs, instance, cursor=first.cursor)
    assert not again.dynamic_partitions_requests

    # A re-queue of a known contract (new payload, even new descriptive fields) adds nothing; a new one does.
    queue.insert(1001, "SPY", account="DU1000001", position=3.0)
    queue.insert(1003, "QQQ", account="DU1000001", right="P", strike=480.5, expiry="20261218")
    third = queue_tick(defs, instance, cursor=again.cursor)
    assert apply_partitions(instance, third) == ["DU1000001-QQQ-20261218-P-480.5-1003"]
    # Even without a cursor (a reset sensor), existing partitions are not added twice.
    assert not queue_tick(defs, instance).dynamic_partitions_requests
    assert len(instance.get_dynamic_partitions(queued_contracts.name)) == 3


def test_observes_the_registry_when_its_version_moves(make_defs, instance, lake_root):
    defs = make_defs()
    registry = StrategyRegistry(lake_root)
    registry.add_active(11, "SPY", "C", 600.0, "20261218", 1)
    registry.add_active(12, "SPY", "P", 500.0, "20261218", 1)
    registry.deactivate(12)
    first = queue_tick(defs, instance)
    observed = [e for e in first.asset_events if e.asset_key == dg.AssetKey("strategy_registry")]
    assert observed[0].metadata["active_legs"].value == 1
    assert observed[0].metadata["legs"].value == 2
    second = queue_tick(defs, instance, cursor=first.cursor)
    assert not [e for e in second.asset_events if e.asset_key == dg.AssetKey("strategy_registry")]
    assert json.loads(second.cursor)["registry_version"] == registry.version()
