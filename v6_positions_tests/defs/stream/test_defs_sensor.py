"""The sensors: the supervisor launches, leaves a live run alone, replaces a dead one; the queue sensor adds
partitions once and observes the tables."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid

import dagster as dg
from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from defs_helpers import apply_partitions, queue_tick, tick
from lake_helpers import enqueue
from polling import wait_for

from v6_positions.config import Settings
from v6_positions.definitions import build_definitions
from v6_positions.defs.batch.partition_keys import queued_contracts
from v6_positions.defs.resources import StreamSupervision
from v6_positions.defs.stream.heartbeat import (
    BEAT_RUN_TAG,
    GATEWAY_TAG,
    HEARTBEAT_TAG,
    RELEASED_TAG,
    STREAM_JOB_NAME,
    WORKER_TAG,
    judge_stream_runs,
    mark_released,
    worker_identity,
)
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.registry import StrategyRegistry

GATEWAY = "127.0.0.1:4002"
# Where a launched run's job comes from (the run storage requires it of queued runs).
JOB_ORIGIN = RemoteJobOrigin(
    RemoteRepositoryOrigin(
        InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="v6_positions.definitions")),
        "__repository__",
    ),
    STREAM_JOB_NAME,
)


def add_run(
    instance: dg.DagsterInstance,
    status: dg.DagsterRunStatus = dg.DagsterRunStatus.STARTED,
    *,
    beat_age_s: float | None = None,
    worker: str | None = None,
    **tags: str,
) -> dg.DagsterRun:
    """A stream run as the run storage holds it, stamped as its own op stamps it (heartbeat, worker)."""
    run_id = str(uuid.uuid4())
    stamps = {GATEWAY_TAG: GATEWAY, **tags}
    if beat_age_s is not None:
        stamps |= {HEARTBEAT_TAG: f"{time.time() - beat_age_s:.3f}", BEAT_RUN_TAG: run_id}
    if worker is not None:
        stamps[WORKER_TAG] = worker
    run = dg.DagsterRun(
        job_name=STREAM_JOB_NAME, run_id=run_id, status=status, tags=stamps, remote_job_origin=JOB_ORIGIN
    )
    return instance.add_run(run)


def status_of(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run.run_id).status


def gone_process() -> str:
    """The worker stamp of a process of this host that has exited (and was reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=30)
    return f"{socket.gethostname()}/{process.pid}/"


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
    enqueue(queue, 1001, "SPY", account="DU1000001", position=3.0)
    enqueue(queue, 1003, "QQQ", account="DU1000001", right="P", strike=480.5, expiry="20261218")
    third = queue_tick(defs, instance, cursor=again.cursor)
    assert apply_partitions(instance, third) == ["DU1000001-QQQ-20261218-P-480.5-1003"]
    # Even without a cursor (a reset sensor), existing partitions are not added twice.
    assert not queue_tick(defs, instance).dynamic_partitions_requests
    assert len(instance.get_dynamic_partitions(queued_contracts.name)) == 3


def test_a_queue_tick_reads_only_the_rows_changed_since_its_cursor(make_defs, instance, lake_root):
    defs = make_defs()
    queue = PositionQueue(lake_root)
    rows = [
        {"account": "DU1000001", "conid": c, "symbol": "SPY", "right": "C", "strike": 600.0 + c,
         "expiry": "20261218", "position": 1.0}
        for c in range(1, 31)
    ]  # fmt: skip
    queue.insert_many(rows)
    first = queue_tick(defs, instance)
    assert len(apply_partitions(instance, first)) == 30
    (observed,) = [e for e in first.asset_events if e.asset_key == dg.AssetKey("position_queue")]
    assert observed.metadata["rows_changed"].value == 30
    queue.mark_done([("DU1000001", c) for c in range(1, 31)])  # a batch refreshed them all
    after_batch = queue_tick(defs, instance, cursor=first.cursor)
    assert not after_batch.dynamic_partitions_requests

    # The day goes on: 5 known contracts get a new payload, 2 new contracts appear.
    queue.insert_many([{**row, "position": 2.0} for row in rows[:5]])
    queue.insert_many(
        {"account": "DU1000001", "conid": c, "symbol": "QQQ", "right": "P", "strike": 400.0,
         "expiry": "20261218", "position": 1.0}
        for c in (101, 102)
    )  # fmt: skip
    later = queue_tick(defs, instance, cursor=after_batch.cursor)
    (observed,) = [e for e in later.asset_events if e.asset_key == dg.AssetKey("position_queue")]
    assert observed.metadata["rows_changed"].value == 7  # not the 32 rows of the queue
    assert observed.metadata["new_contracts"].value == 2
    assert sorted(apply_partitions(instance, later)) == [
        "DU1000001-QQQ-20261218-P-400-101",
        "DU1000001-QQQ-20261218-P-400-102",
    ]
    quiet = queue_tick(defs, instance, cursor=later.cursor)
    assert not quiet.dynamic_partitions_requests and not quiet.asset_events
    assert len(instance.get_dynamic_partitions(queued_contracts.name)) == 32


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


def test_a_queued_run_is_never_judged_dead(make_defs, instance):
    queued = add_run(instance, dg.DagsterRunStatus.QUEUED)
    result = tick(make_defs(startup_grace_s=0.0, stale_after_s=0.0), instance)
    assert not result.run_requests  # it waits for the coordinator, perhaps for a dead run's slot
    assert status_of(instance, queued) == dg.DagsterRunStatus.QUEUED


def test_a_run_that_waited_in_the_queue_is_judged_from_when_it_left_it(instance):
    run = add_run(instance, dg.DagsterRunStatus.QUEUED)
    created = instance.get_run_record_by_id(run.run_id).create_timestamp.timestamp()
    wait_for(lambda: time.time() - created > 0.5, 5, "the run to have waited in the queue")
    starting = dg.DagsterEvent(dg.DagsterEventType.RUN_STARTING.value, job_name=STREAM_JOB_NAME)
    instance.report_dagster_event(starting, run.run_id)
    record = instance.get_run_record_by_id(run.run_id)
    assert record.dagster_run.status == dg.DagsterRunStatus.STARTING
    left_queue = record.update_timestamp.timestamp()
    # A grace shorter than its wait in the queue, judged soon after it left the queue: still starting up.
    grace = (left_queue - created) / 2
    (state,) = judge_stream_runs(
        instance, GATEWAY, stale_after_s=60, startup_grace_s=grace, now=left_queue + grace / 2
    )
    assert state.alive and not state.has_beaten
    (late,) = judge_stream_runs(
        instance, GATEWAY, stale_after_s=60, startup_grace_s=grace, now=left_queue + grace * 2
    )
    assert not late.alive


def test_a_suspended_run_is_not_alive_and_is_replaced(make_defs, instance):
    # It ran on another host before it was suspended: nothing to probe, and nothing to wait for either.
    suspended = add_run(instance, dg.DagsterRunStatus.SUSPENDED, beat_age_s=0.0, worker="another-host/7/1")
    result = tick(make_defs(), instance)
    assert status_of(instance, suspended) == dg.DagsterRunStatus.FAILURE
    assert len(result.run_requests) == 1
    failure = instance.all_logs(suspended.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert "suspended" in failure[0].message


def test_a_heartbeat_copied_from_the_parent_run_does_not_keep_a_retry_alive(make_defs, instance):
    parent = str(uuid.uuid4())
    copied = {HEARTBEAT_TAG: f"{time.time():.3f}", BEAT_RUN_TAG: parent, "dagster/parent_run_id": parent}
    retry = add_run(instance, **copied)
    # Judged as a run that never beat: by the start-up grace, whatever the copied stamp says.
    assert not tick(make_defs(startup_grace_s=60, stale_after_s=600), instance).run_requests
    no_grace = make_defs(startup_grace_s=0.5, stale_after_s=600)
    result = wait_for(lambda: (r := tick(no_grace, instance)).run_requests and r, 5, "the grace to run out")
    assert status_of(instance, retry) == dg.DagsterRunStatus.FAILURE
    assert len(result.run_requests) == 1


def test_a_run_judged_dead_is_replaced_only_once_it_released_the_gateway(make_defs, instance):
    """Its process (here: this one) still runs, e.g. it was frozen or stuck writing its heartbeat."""
    frozen = add_run(instance, beat_age_s=120, worker=worker_identity())
    defs = make_defs(stale_after_s=60, restart_backoff_s=0)
    result = tick(defs, instance)
    assert status_of(instance, frozen) == dg.DagsterRunStatus.FAILURE
    assert not result.run_requests
    assert not tick(defs, instance).run_requests  # however many ticks pass
    mark_released(instance, frozen.run_id)  # what the run does once it read its status and disconnected
    assert len(tick(defs, instance).run_requests) == 1


def test_a_run_whose_process_is_gone_is_replaced_in_the_same_tick(make_defs, instance):
    killed = add_run(instance, beat_age_s=120, worker=gone_process())
    result = tick(make_defs(stale_after_s=60), instance)
    assert status_of(instance, killed) == dg.DagsterRunStatus.FAILURE
    assert len(result.run_requests) == 1


def test_a_new_process_under_the_old_pid_does_not_hold_the_gateway(make_defs, instance):
    host, pid, _ = worker_identity().split("/")
    reused = add_run(instance, beat_age_s=120, worker=f"{host}/{pid}/1")  # this pid, another start time
    assert len(tick(make_defs(stale_after_s=60), instance).run_requests) == 1
    assert status_of(instance, reused) == dg.DagsterRunStatus.FAILURE


def test_a_run_on_another_host_is_waited_for_until_the_release_timeout(make_defs, instance):
    add_run(instance, beat_age_s=120, worker="another-host/4242/99")
    assert not tick(make_defs(stale_after_s=60, restart_backoff_s=0), instance).run_requests
    timed_out = make_defs(stale_after_s=60, restart_backoff_s=0, release_timeout_s=0)
    assert len(tick(timed_out, instance).run_requests) == 1


def test_a_release_copied_from_the_parent_run_does_not_count(make_defs, instance):
    parent = str(uuid.uuid4())
    copied = {RELEASED_TAG: parent, "dagster/parent_run_id": parent}
    child = add_run(instance, beat_age_s=120, worker=worker_identity(), **copied)
    defs = make_defs(stale_after_s=60, restart_backoff_s=0)
    assert not tick(defs, instance).run_requests
    mark_released(instance, child.run_id)
    assert len(tick(defs, instance).run_requests) == 1


def test_supervision_goes_on_when_the_lake_is_unreadable(instance, tmp_path):
    """The supervisor never reads the lake: a file where the lake should be, or corrupt tables, change
    nothing about launching and replacing stream runs."""
    not_a_dir = tmp_path / "lake-is-a-file"
    not_a_dir.write_text("not a lake")
    corrupt = tmp_path / "corrupt-lake"
    for table in ("strategy_registry", "position_queue", "streamed_positions"):
        log_dir = corrupt / table / "_delta_log"
        log_dir.mkdir(parents=True)
        (log_dir / "00000000000000000000.json").write_text("{ this is not a delta log")
    supervision = StreamSupervision(stale_after_s=60, restart_backoff_s=0)
    for root in (not_a_dir, corrupt):
        defs = build_definitions(Settings(lake_uri=str(root)), supervision)
        assert len(tick(defs, instance).run_requests) == 1
        dead = add_run(instance, beat_age_s=120)
        assert len(tick(defs, instance).run_requests) == 1
        assert status_of(instance, dead) == dg.DagsterRunStatus.FAILURE
    assert not_a_dir.read_text() == "not a lake"  # nothing was written over it
