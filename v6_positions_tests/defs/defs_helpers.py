"""Helpers shared by the Dagster tests (plain functions; fixtures live in dagster_fixtures.py).

Bounded polls are `polling.wait_for`; demo legs are registered with
`v6_positions.commands.launch.register_demo_legs`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from v6_positions.defs.jobs import BATCH_JOB_NAME
from v6_positions.defs.stream.heartbeat import GATEWAY_TAG, STREAM_JOB_NAME
from v6_positions.lake.tables import read_table


def tick(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    cursor: str | None = None,
    sensor: str = "stream_supervisor",
) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources)
    result = defs.resolve_sensor_def(sensor)(context)
    assert isinstance(result, dg.SensorResult)
    return result


def queue_tick(
    defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None = None
) -> dg.SensorResult:
    """A tick of the queue_partitions sensor (queue keys -> partitions, table observations)."""
    return tick(defs, instance, cursor, sensor="queue_partitions")


def apply_partitions(instance: dg.DagsterInstance, result: dg.SensorResult) -> list[str]:
    """What the sensor daemon does with the tick's partition requests."""
    added: list[str] = []
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        added.extend(request.partition_keys)
    return added


def streamed_conids(lake_root: str) -> set[int]:
    return set(read_table(lake_root, "streamed_positions")["conid"].unique().to_list())


def stream_then_batch(
    defs: dg.Definitions, instance: dg.DagsterInstance, port: int, stream_s: float = 5.0
) -> None:
    """What a minute of the running system does to the book: a bounded stream run, the queue sensor's
    partitions, and the batch schedule's runs (each executed, each required to succeed)."""
    stream = defs.resolve_job_def(STREAM_JOB_NAME).execute_in_process(
        instance=instance,
        run_config={"ops": {"stream_positions": {"config": {"duration_s": stream_s}}}},
        tags={GATEWAY_TAG: f"127.0.0.1:{port}"},
    )
    assert stream.success
    apply_partitions(instance, queue_tick(defs, instance))
    requests = batch_requests(defs, instance)
    assert requests, "the batch schedule found nothing to refresh"
    for request in requests:
        batch = defs.resolve_job_def(BATCH_JOB_NAME).execute_in_process(instance=instance, tags=request.tags)
        assert batch.success


def batch_requests(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    """One tick of the batch schedule: its run requests.

    The context opens (and enters) its own instance from the ref; only `with` closes it. Left open, Dagster's
    current defs-state storage keeps pointing at that instance after it is collected, and a later test's
    Definitions load fails with "Attempted to resolve undefined DagsterInstance weakref"."""
    schedule = defs.resolve_schedule_def("queued_positions_batch")
    with dg.build_schedule_context(
        instance=instance, resources=defs.resources, scheduled_execution_time=datetime.now(UTC)
    ) as context:
        return list(schedule.evaluate_tick(context).run_requests or [])
