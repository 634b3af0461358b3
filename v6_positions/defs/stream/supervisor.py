"""The supervisor sensor: keeps one stream run alive per gateway.

It never connects to IB, never streams and never reads the lake: a tick reads a bounded number of run records
only, so a broken or slow lake cannot stop supervision (queue keys become partitions in a sensor of their own,
`batch/queue_sensor.py`).

A run judged dead is marked failed at once, but its replacement is requested only once no finished run may
still hold the gateway (`gateway_holders`): a run wrongly judged dead (a frozen process, a heartbeat stuck on
a locked database) lets go when it reads its status, says so, and only then is replaced.
"""

import time

import dagster as dg

from v6_positions.defs.resources import IBResource, StreamSupervision
from v6_positions.defs.stream.heartbeat import (
    GATEWAY_TAG,
    STREAM_JOB_NAME,
    StreamRunState,
    gateway_holders,
    judge_stream_runs,
    mark_released,
)


@dg.sensor(
    job_name=STREAM_JOB_NAME,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps one stream run alive per gateway (judged by its heartbeat; a dead run is marked "
    "failed and replaced once it released the gateway or its process is gone).",
)
def stream_supervisor(
    context: dg.SensorEvaluationContext,
    ib: IBResource,
    supervision: StreamSupervision,
) -> dg.SensorResult:
    return dg.SensorResult(run_requests=supervise_stream(context, ib.gateway, supervision))


def supervise_stream(
    context: dg.SensorEvaluationContext, gateway: str, supervision: StreamSupervision
) -> list[dg.RunRequest]:
    """Mark dead stream runs failed; request a new run when none is alive and none may hold the gateway."""
    instance = context.instance
    now = time.time()
    states = judge_stream_runs(
        instance,
        gateway,
        stale_after_s=supervision.stale_after_s,
        startup_grace_s=supervision.startup_grace_s,
        now=now,
    )
    for state in states:
        if not state.alive:
            _mark_dead(context, state, now)
    alive = [state for state in states if state.alive]
    if alive:
        context.log.debug(f"stream run {alive[0].run_id} alive ({alive[0].status.value})")
        return []
    # Read after the marks above: a run marked dead that has not stamped its worker by now never connects.
    holders = gateway_holders(instance, gateway, release_timeout_s=supervision.release_timeout_s, now=now)
    if holders:
        for holder in holders:
            context.log.info(
                f"stream run {holder.run_id} ({holder.status.value}) may still hold {gateway}: "
                f"{holder.reason}; its replacement waits"
            )
        return []
    if not any(not state.alive for state in states) and _recently_failed(instance, gateway, supervision, now):
        context.log.info(f"last stream run failed < {supervision.restart_backoff_s}s ago: waiting")
        return []
    context.log.info(f"no live stream run for {gateway}: requesting one")
    # Unique per launch: a run key the sensor used before would be skipped silently.
    return [dg.RunRequest(run_key=f"stream:{gateway}:{now:.3f}", tags={GATEWAY_TAG: gateway})]


def _mark_dead(context: dg.SensorEvaluationContext, state: StreamRunState, now: float) -> None:
    run = context.instance.get_run_by_id(state.run_id)
    if run is None:
        return
    if state.status == dg.DagsterRunStatus.SUSPENDED:
        what = "suspended: a stream needs a worker"
    elif state.has_beaten:
        what = f"last heartbeat {state.age_s(now):.0f}s ago"
    else:
        what = f"no heartbeat {state.age_s(now):.0f}s after it started"
    message = (
        f"stream run {state.run_id} presumed dead: {what} (status {state.status.value}); marked failed by "
        "the stream_supervisor sensor. If it still runs, it stops streaming when it reads this."
    )
    context.log.warning(message)
    context.instance.report_run_failed(run, message=message)
    if state.status == dg.DagsterRunStatus.SUSPENDED:
        mark_released(context.instance, run.run_id)  # no worker holds it, by the status's definition


def _recently_failed(
    instance: dg.DagsterInstance, gateway: str, supervision: StreamSupervision, now: float
) -> bool:
    records = instance.get_run_records(
        dg.RunsFilter(
            job_name=STREAM_JOB_NAME, tags={GATEWAY_TAG: gateway}, statuses=[dg.DagsterRunStatus.FAILURE]
        ),
        limit=1,
    )
    end = records[0].end_time if records else None
    return end is not None and now - end < supervision.restart_backoff_s
