"""The stream job: one long-lived run that holds the IB stream, reports progress and a heartbeat.

The streamer (asyncio, ib_async) runs on its own event loop in a worker thread (`thread.py`); the
op's main thread only waits on it, stamps the heartbeat, and logs progress at a bounded rate
(`report.py`). Keeping Dagster calls on the main thread matters because the run context is not
thread-safe. This module owns the run's life: start, refuse to connect, stop, and how the run ends.

Stopping: while it streams, the op turns SIGINT/SIGTERM (Dagster's "Terminate", or Ctrl-C / SIGTERM reaching
every process of `dagster dev` at once) into a clean stop: cancel streams, flush buffered rows, disconnect. A
second signal during that stop cannot cut the flush short. The run then ends CANCELED, the way Dagster ends a
run it was asked to terminate, not FAILURE ("interrupted unexpectedly"): nothing went wrong.

One stream per gateway: the job's tags carry the gateway, so every run of it is capped by the instance's tag
concurrency limit. The op stamps its worker process before connecting and `v6/released` once disconnected, and
lets go as soon as it reads that the supervisor judged it dead, so its replacement never overlaps it.
"""

# No `from __future__ import annotations`: Dagster reads the op's config and resource annotations as types.
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import NoReturn

import dagster as dg

from v6_positions.defs.resources import IBResource, LakeResource, StreamSupervision, settings_of
from v6_positions.defs.stream.heartbeat import GATEWAY_TAG, STREAM_JOB_NAME, judge_stream_runs, mark_released
from v6_positions.defs.stream.report import StreamReporter
from v6_positions.defs.stream.thread import STOP_GRACE_S, LatestRows, StreamThread
from v6_positions.lake.history import HistoryWriter

_POLL_S = 0.5  # how often the main thread wakes: bounds shutdown latency, not the event rate
_CANCELED = (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)
_FENCED = (*_CANCELED, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS)
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StreamConfig(dg.Config):
    # 0 = run until terminated (production); tests and demos bound it.
    duration_s: float = 0.0


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """While streaming, SIGINT/SIGTERM set `stop` instead of raising mid-flush; restored on exit.

    Signal handlers can only be set on the main thread (where the in-process executor runs the op); elsewhere
    Dagster's own handling stays in place.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}
    for signum in _STOP_SIGNALS:
        signal.signal(signum, lambda *_: stop.set())
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dg.op(
    description="Stream the active strategy legs until terminated: ticks -> streamed_positions, every other "
    "position -> position_queue. Reports progress and a heartbeat; stops cleanly (flush) on termination.",
)
def stream_positions(
    context: dg.OpExecutionContext,
    config: StreamConfig,
    lake: LakeResource,
    ib: IBResource,
    supervision: StreamSupervision,
) -> None:
    settings = settings_of(lake, ib)
    writer = HistoryWriter(
        settings.lake_uri,
        "streamed_positions",
        settings.lake_storage_options or None,
        flush_interval_s=settings.flush_interval_s,
        buffer_cap=settings.stream_buffer_cap,
    )
    latest = LatestRows()
    reporter = StreamReporter(context, supervision, writer, latest)
    _claim_gateway(context, settings.gateway)
    # First heartbeat before connecting: the sensor's start-up grace ends here.
    _refuse_unless_clear(context, reporter, reporter.first_beat(), settings.gateway, supervision)
    thread = StreamThread(settings, writer, latest)
    signalled = threading.Event()
    context.log.info(
        f"streaming from {settings.gateway} (clientId {settings.ib_client_id}, "
        f"budget {settings.line_budget} lines)"
    )
    # Everything up to the run's last word runs with signals deferred, the final flush included.
    with _stop_on_signals(signalled):
        try:
            thread.start()
            fenced = _stream_until_stopped(context, config, reporter, thread, signalled)
        except BaseException:
            thread.request_stop()  # never leave a stream behind a failed op: the process may live on
            thread.join(timeout=STOP_GRACE_S)
            raise
        finally:
            try:
                writer.close()  # idempotent: the streamer's handler already flushed; catches a wedged stream
            finally:
                if not thread.is_alive():
                    _say_released(context)
        if thread.error is not None:
            raise thread.error
        status = thread.status()
        reporter.progress(status)
        context.log.info(f"stream stopped: {asdict(status) if status else 'never started'}")
        if signalled.is_set() or fenced in _CANCELED:
            _end_as_canceled(context, reporter, "signal" if signalled.is_set() else "termination request")
    if fenced in _FENCED:
        raise dg.Failure(f"stream stopped: the run was marked {fenced.value} while streaming")


def _claim_gateway(context: dg.OpExecutionContext, gateway: str) -> None:
    """The job carries the gateway tag; a run launched with it edited away gets it back, so supervision and
    the checks see it (the coordinator's cap could not apply to it: `_refuse_unless_clear` covers that)."""
    if context.run.tags.get(GATEWAY_TAG) != gateway:
        context.log.warning(
            f"run tag {GATEWAY_TAG}={context.run.tags.get(GATEWAY_TAG)!r} does not name this run's gateway "
            f"{gateway}: setting it"
        )
        context.instance.add_run_tags(context.run_id, {GATEWAY_TAG: gateway})


def _refuse_unless_clear(
    context: dg.OpExecutionContext,
    reporter: StreamReporter,
    status: dg.DagsterRunStatus,
    gateway: str,
    supervision: StreamSupervision,
) -> None:
    """Do not connect when the run was already let go (the supervisor judged it dead, or it was terminated
    while starting) or when an older stream run of the gateway is alive: one stream per gateway."""
    if status in _FENCED:
        _say_released(context)
        if status in _CANCELED:
            _end_as_canceled(context, reporter, "termination request before connecting")
        raise dg.Failure(f"the run is {status.value} in the instance before it connected: not streaming")
    states = judge_stream_runs(
        context.instance, gateway, stale_after_s=supervision.stale_after_s, startup_grace_s=0.0
    )
    own = next((i for i, s in enumerate(states) if s.run_id == context.run_id), len(states))
    # Newest first: runs after ours were created before it. Of two runs starting together, the older wins.
    older_alive = [s for s in states[own + 1 :] if s.has_beaten and s.alive]
    if older_alive:
        _say_released(context)
        other = older_alive[0]
        raise dg.Failure(
            f"stream run {other.run_id} already streams from {gateway} ({other.status.value}, heartbeat "
            f"{other.age_s(time.time()):.0f}s ago): this run does not connect (one stream per gateway)"
        )


def _say_released(context: dg.OpExecutionContext) -> None:
    try:
        mark_released(context.instance, context.run_id)
    except Exception as exc:  # the supervisor then waits until this process is gone
        context.log.warning(f"could not say the gateway is released: {type(exc).__name__}: {exc}")


def _stream_until_stopped(
    context: dg.OpExecutionContext,
    config: StreamConfig,
    reporter: StreamReporter,
    thread: StreamThread,
    signalled: threading.Event,
) -> dg.DagsterRunStatus | None:
    """Report while the stream runs; stop it on a signal, a fencing run status or the duration.

    Returns the fencing status, if that is what stopped it.
    """
    deadline = reporter.started + config.duration_s if config.duration_s > 0 else None
    fenced: dg.DagsterRunStatus | None = None
    stopping_since: float | None = None
    while thread.is_alive():
        thread.join(timeout=_POLL_S)
        if stopping_since is not None:
            if time.monotonic() - stopping_since > STOP_GRACE_S:
                context.log.warning(f"the stream did not stop within {STOP_GRACE_S:.0f}s: flushing anyway")
                break
            continue
        run_status = reporter.tick(thread.status())
        if signalled.is_set():
            reason = "run terminated: stopping the stream and flushing"
        elif run_status in _FENCED:
            # Marked canceling, or failed by the supervisor (a missed heartbeat): another stream run may
            # already hold the gateway, so this one must let go.
            fenced = run_status
            reason = f"run is {run_status.value} in the instance: stopping the stream"
        elif deadline is not None and time.monotonic() >= deadline:
            reason = f"duration {config.duration_s}s reached: stopping"
        else:
            continue
        context.log.info(reason)
        stopping_since = time.monotonic()
        thread.request_stop()
    return fenced


def _end_as_canceled(context: dg.OpExecutionContext, reporter: StreamReporter, cause: str) -> NoReturn:
    """End the run as Dagster ends a run it terminated: CANCELED once the run is marked CANCELING.

    Dagster's run loop (`job_execution_iterator`) turns an interrupt into RUN_CANCELED when the run is
    CANCELING, and into a FAILURE otherwise; a signal from outside Dagster leaves the run STARTED, so mark
    it CANCELING first. A run the supervisor already failed stays failed.
    """
    if reporter.run_status() in (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED):
        run = context.instance.get_run_by_id(context.run_id)
        if run is not None:
            context.instance.report_run_canceling(
                run, message=f"stream stopped by a {cause}: streams cancelled, buffered rows flushed"
            )
    raise dg.DagsterExecutionInterruptedError()


def build_stream_job(gateway: str) -> dg.JobDefinition:
    """The stream job of one gateway. Its tags, copied onto every run of it (sensor, Launchpad, retry,
    re-execution), carry the gateway, so the instance's tag concurrency limit caps them all alike."""

    @dg.job(
        name=STREAM_JOB_NAME,
        # One process: a SIGKILL of the run worker takes the IB connection with it (no orphaned step process).
        executor_def=dg.in_process_executor,
        description=f"The long-lived position stream of {gateway}, launched and supervised by the "
        "stream_supervisor sensor; at most one run per gateway (run tag v6/stream-gateway).",
        tags={"v6/role": "stream", GATEWAY_TAG: gateway},
    )
    def position_stream_job() -> None:
        stream_positions()

    return position_stream_job
