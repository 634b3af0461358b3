"""The stream run's heartbeat, and how the sensor (and the batch path) judge whether a stream run is alive.

The default run launcher never notices a killed run worker: the run stays STARTED forever. So the stream run
stamps a run tag `v6/heartbeat=<epoch seconds>` every few seconds (one cheap UPDATE of the run's tags), and a
reader judges liveness from the newest stamp. Tags come back with `get_run_records`, so judging every stream
run of a gateway is one query.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import dagster as dg

HEARTBEAT_TAG = "v6/heartbeat"
# One stream run per gateway: the sensor checks this tag; dagster.yaml's tag_concurrency_limits can cap it.
GATEWAY_TAG = "v6/stream-gateway"
STREAM_JOB_NAME = "position_stream"

_WAITING = (dg.DagsterRunStatus.QUEUED,)
_UNFINISHED = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)


@dataclass(frozen=True, slots=True)
class StreamRunState:
    run_id: str
    status: dg.DagsterRunStatus
    last_beat: float  # epoch seconds: newest heartbeat, else when the run started or was created
    has_beaten: bool
    alive: bool

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.last_beat)


def write_heartbeat(instance: dg.DagsterInstance, run_id: str, now: float | None = None) -> None:
    instance.add_run_tags(run_id, {HEARTBEAT_TAG: f"{time.time() if now is None else now:.3f}"})


def judge_stream_runs(
    instance: dg.DagsterInstance,
    gateway: str,
    *,
    stale_after_s: float,
    startup_grace_s: float,
    now: float | None = None,
) -> list[StreamRunState]:
    """Every unfinished stream run of `gateway`, newest first, each judged alive or dead."""
    now = time.time() if now is None else now
    records = instance.get_run_records(
        dg.RunsFilter(job_name=STREAM_JOB_NAME, tags={GATEWAY_TAG: gateway}, statuses=list(_UNFINISHED))
    )
    return [_judge(record, now, stale_after_s, startup_grace_s) for record in records]


def _judge(record: dg.RunRecord, now: float, stale_after_s: float, startup_grace_s: float) -> StreamRunState:
    run = record.dagster_run
    beat_tag = run.tags.get(HEARTBEAT_TAG)
    created = record.create_timestamp.timestamp()
    if beat_tag is not None:
        last_beat, allowed = float(beat_tag), stale_after_s
    else:
        last_beat, allowed = (record.start_time or created), startup_grace_s
    # A queued run waits for the run coordinator (perhaps for a dead run's slot): not ours to judge.
    alive = run.status in _WAITING or now - last_beat <= allowed
    return StreamRunState(run.run_id, run.status, last_beat, beat_tag is not None, alive)


def live_stream_run(
    instance: dg.DagsterInstance, gateway: str, *, stale_after_s: float, now: float | None = None
) -> StreamRunState | None:
    """The stream run of `gateway` that has a fresh heartbeat, if any (used by the batch path)."""
    for state in judge_stream_runs(
        instance, gateway, stale_after_s=stale_after_s, startup_grace_s=0.0, now=now
    ):
        if state.has_beaten and state.alive:
            return state
    return None
