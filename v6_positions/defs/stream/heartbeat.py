"""The stream run's heartbeat, and how the sensor (and the batch path) judge whether a stream run is alive.

The default run launcher never notices a killed run worker: the run stays STARTED forever. So the stream run
stamps a run tag `v6/heartbeat=<epoch seconds>` every few seconds (one cheap UPDATE of the run's tags), and a
reader judges liveness from the newest stamp. Tags come back with `get_run_records`, so judging every stream
run of a gateway is one query.

Tags a run writes about itself name the run that wrote them (`v6/heartbeat-run`, `v6/released`): Dagster
copies a parent's tags onto a retry or a re-execution, and a child must not look alive (or released) on its
parent's word.

A run judged dead may still hold its IB connection (a frozen process, a heartbeat stuck on a locked
database). `gateway_holders` says which finished stream runs may still hold it: a run is let go only once it
stamped `v6/released` after disconnecting, never reached the op (no `v6/worker` stamp), or its process is
certainly gone (same host, pid gone or a zombie, or a new process under the old pid).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

log = logging.getLogger(__name__)

HEARTBEAT_TAG = "v6/heartbeat"
# The run that wrote the heartbeat (and the worker, line tags next to it): a copied parent's tag is not ours.
BEAT_RUN_TAG = "v6/heartbeat-run"
# `<host>/<pid>/<process start ticks>` of the process running the op, stamped before it connects.
WORKER_TAG = "v6/worker"
# The id of the run, stamped once its IB connection is closed (or was never opened).
RELEASED_TAG = "v6/released"
# One stream run per gateway: the job carries this tag; dagster.yaml's tag_concurrency_limits caps it.
GATEWAY_TAG = "v6/stream-gateway"
STREAM_JOB_NAME = "position_stream"
# Run tags next to the heartbeat, so a reader of the run (sensor, checks) sees the line usage it vouches for.
LINES_TAG = "v6/lines-in-use"
BUDGET_TAG = "v6/line-budget"
CONNECTED_TAG = "v6/connected"
ROTATION_BOUND_TAG = "v6/rotation-bound-s"  # staleness bound of the rotating legs; "" when none rotate

# Waiting for the run coordinator (perhaps for a dead run's slot): not ours to judge.
_WAITING = (dg.DagsterRunStatus.QUEUED,)
# No worker holds it (1.13: "waiting on external work with no run worker"): never alive, never waited for.
_WORKERLESS = (dg.DagsterRunStatus.SUSPENDED,)
_UNFINISHED = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
    dg.DagsterRunStatus.SUSPENDED,
)
_FINISHED = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.SUCCESS)
# Bounded work per sensor tick, whatever the run history: at most this many run records per query (more
# unfinished stream runs of one gateway would already be a bug; finished ones are read newest first).
_MAX_RUNS_READ = 25
# Finished runs older than this are not read for holders: a process judged dead a day ago and still alive
# is an operator's problem (the sensor logged it on every tick meanwhile), not a reason to stop forever.
_HOLDER_HORIZON_S = 86_400.0


@dataclass(frozen=True, slots=True)
class StreamRunState:
    run_id: str
    status: dg.DagsterRunStatus
    last_beat: float  # epoch seconds: own newest heartbeat, else when the run started or left the queue
    has_beaten: bool
    alive: bool

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.last_beat)


@dataclass(frozen=True, slots=True)
class GatewayHolder:
    """A finished stream run that may still hold its IB connection, and why we think so."""

    run_id: str
    status: dg.DagsterRunStatus
    reason: str


def write_heartbeat(
    instance: dg.DagsterInstance,
    run_id: str,
    now: float | None = None,
    extra: Mapping[str, str] | None = None,
) -> None:
    """One tag write: the stamp, whose stamp it is, and any tags that must change with it."""
    stamp = f"{time.time() if now is None else now:.3f}"
    instance.add_run_tags(run_id, {HEARTBEAT_TAG: stamp, BEAT_RUN_TAG: run_id, **(extra or {})})


def mark_released(instance: dg.DagsterInstance, run_id: str) -> None:
    """Say the run's IB connection is closed: the supervisor may start its replacement."""
    instance.add_run_tags(run_id, {RELEASED_TAG: run_id})


def own_tags(run: dg.DagsterRun) -> Mapping[str, str]:
    """The run's tags without the runtime stamps a retry or re-execution copied from its parent.

    A stamp without `v6/heartbeat-run` (written before that tag existed) counts as the run's own unless the
    run is a child of another run.
    """
    writer = run.tags.get(BEAT_RUN_TAG)
    copied = writer != run.run_id if writer is not None else "dagster/parent_run_id" in run.tags
    if not copied:
        return run.tags
    return {k: v for k, v in run.tags.items() if k not in (HEARTBEAT_TAG, BEAT_RUN_TAG, WORKER_TAG)}


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
        dg.RunsFilter(job_name=STREAM_JOB_NAME, tags={GATEWAY_TAG: gateway}, statuses=list(_UNFINISHED)),
        limit=_MAX_RUNS_READ,
    )
    return [_judge(record, now, stale_after_s, startup_grace_s) for record in records]


def _judge(record: dg.RunRecord, now: float, stale_after_s: float, startup_grace_s: float) -> StreamRunState:
    run = record.dagster_run
    beat_tag = own_tags(run).get(HEARTBEAT_TAG)
    if beat_tag is not None:
        last_beat, allowed = float(beat_tag), stale_after_s
    else:
        last_beat, allowed = _started_at(record), startup_grace_s
    if run.status in _WORKERLESS:
        alive = False
    else:
        alive = run.status in _WAITING or now - last_beat <= allowed
    return StreamRunState(run.run_id, run.status, last_beat, beat_tag is not None, alive)


def _started_at(record: dg.RunRecord) -> float:
    """When the run's start-up began: its start, or when it last changed status (left the queue), never
    its creation (a run may wait in the queue for a long time)."""
    if record.start_time is not None:
        return record.start_time
    return max(record.create_timestamp.timestamp(), record.update_timestamp.timestamp())


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


def gateway_holders(
    instance: dg.DagsterInstance, gateway: str, *, release_timeout_s: float, now: float | None = None
) -> list[GatewayHolder]:
    """Finished stream runs of `gateway` that may still hold their IB connection.

    A run on this host is waited for as long as its process lives. A run on another host (a container run
    launcher) cannot be probed from here: it is waited for `release_timeout_s` after it ended, then let go,
    and the gateway's clientId check (326) is the last fence.
    """
    now = time.time() if now is None else now
    records = instance.get_run_records(
        dg.RunsFilter(
            job_name=STREAM_JOB_NAME,
            tags={GATEWAY_TAG: gateway},
            statuses=list(_FINISHED),
            updated_after=datetime.fromtimestamp(now - _HOLDER_HORIZON_S, UTC),
        ),
        limit=_MAX_RUNS_READ,
    )
    holders = []
    for record in records:
        run = record.dagster_run
        reason = _still_holding(run)
        if reason is None:
            continue
        end = record.end_time if record.end_time is not None else record.update_timestamp.timestamp()
        if reason.remote and now - end > release_timeout_s:
            continue
        holders.append(GatewayHolder(run.run_id, run.status, reason.text))
    return holders


@dataclass(frozen=True, slots=True)
class _Holding:
    text: str
    remote: bool  # on another host: cannot be probed, only waited for


def _still_holding(run: dg.DagsterRun) -> _Holding | None:
    """Why a finished run may still hold the gateway, or None when it certainly does not."""
    if run.tags.get(RELEASED_TAG) == run.run_id:
        return None
    worker = own_tags(run).get(WORKER_TAG)
    if worker is None:
        # It never reached the op (tags are read after the run was finished, and the op reads its status
        # after stamping the worker): it cannot connect any more.
        return None
    host, _, process = worker.partition("/")
    if host != socket.gethostname():
        return _Holding(f"its worker {worker} runs on another host and has not released the gateway", True)
    pid, _, start = process.partition("/")
    if not pid.isdigit() or _process_gone(int(pid), start):
        return None
    return _Holding(f"its worker process {pid} on this host is still running and has not released it", False)


def worker_identity() -> str:
    """`<host>/<pid>/<start ticks>`: enough to tell later, on the same host, whether this process is gone."""
    return f"{socket.gethostname()}/{os.getpid()}/{_start_ticks(os.getpid()) or ''}"


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), which tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; the fields after the last ')' are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 else None


def _process_gone(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        return False  # no /proc to look closer: it exists, so it may be ours
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return True  # a zombie has closed its sockets; only its parent's wait is missing
    return bool(start) and len(fields) > 19 and fields[19] != start
