"""The stream job: one long-lived run that holds the IB stream, reports progress and a heartbeat.

The streamer (asyncio, ib_async) runs on its own event loop in a worker thread; the op's main thread only
waits on it, stamps the heartbeat, and logs progress at a bounded rate. Keeping Dagster calls on the main
thread matters because the run context is not thread-safe.

Stopping: while it streams, the op turns SIGINT/SIGTERM (Dagster's "Terminate", or Ctrl-C / SIGTERM reaching
every process of `dagster dev` at once) into a clean stop: cancel streams, flush buffered rows, disconnect. A
second signal during that stop cannot cut the flush short. The run then ends CANCELED, the way Dagster ends a
run it was asked to terminate, not FAILURE ("interrupted unexpectedly"): nothing went wrong.

One stream per gateway: the job's tags carry the gateway, so every run of it is capped by the instance's tag
concurrency limit. The op stamps its worker process before connecting and `v6/released` once disconnected, and
lets go as soon as it reads that the supervisor judged it dead, so its replacement never overlaps it.
"""

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import NoReturn

import dagster as dg

from v6_positions.config import Settings
from v6_positions.defs.heartbeat import (
    GATEWAY_TAG,
    STREAM_JOB_NAME,
    WORKER_TAG,
    judge_stream_runs,
    mark_released,
    worker_identity,
    write_heartbeat,
)
from v6_positions.defs.metadata import position_rows_frame, rows_markdown
from v6_positions.defs.resources import IBResource, LakeResource, StreamSupervision, settings_of
from v6_positions.ib.handlers import DeltaLakePositionWriter, row_from_update
from v6_positions.ib.streamer import PositionStreamer, StreamStatus
from v6_positions.ib.updates import PositionUpdate
from v6_positions.lake.history import HistoryWriter, PositionRow
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.registry import StrategyRegistry

# Run tags next to the heartbeat, so a reader of the run (sensor, checks) sees the line usage it vouches for.
LINES_TAG = "v6/lines-in-use"
BUDGET_TAG = "v6/line-budget"
CONNECTED_TAG = "v6/connected"
ROTATION_BOUND_TAG = "v6/rotation-bound-s"  # staleness bound of the rotating legs; "" when none rotate

_POLL_S = 0.5  # how often the main thread wakes: bounds shutdown latency, not the event rate
_STOP_GRACE_S = 30.0  # time the streamer gets to cancel streams, flush and disconnect
_CANCELED = (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)
_FENCED = (*_CANCELED, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS)
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StreamConfig(dg.Config):
    # 0 = run until terminated (production); tests and demos bound it.
    duration_s: float = 0.0


class _LatestRows:
    """A handler that keeps the newest row per contract, for the progress events' table (no storage read)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, int], PositionRow] = {}
        self._lock = threading.Lock()

    async def on_position_update(self, update: PositionUpdate) -> None:
        row = row_from_update(update)
        with self._lock:
            self._rows[(row.account, row.conid)] = row

    def rows(self) -> list[PositionRow]:
        with self._lock:
            return list(self._rows.values())


class _StreamThread(threading.Thread):
    """Builds the streamer on its own event loop (ib_async binds to the loop it is created on) and runs it."""

    def __init__(self, settings: Settings, writer: HistoryWriter, latest: _LatestRows) -> None:
        super().__init__(name="v6-position-stream", daemon=True)
        self._settings = settings
        self._writer = writer
        self._latest = latest
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self.streamer: PositionStreamer | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to the op, which fails the run with it
            self.error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        s = self._settings
        registry = StrategyRegistry(s.lake_uri, s.lake_storage_options or None)
        queue = PositionQueue(s.lake_uri, s.lake_storage_options or None)
        self.streamer = PositionStreamer(
            s, registry, queue, handlers=[DeltaLakePositionWriter(self._writer), self._latest]
        )
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._ready.set()
        await self.streamer.run(self._stop_event)

    def request_stop(self) -> None:
        self._ready.wait(timeout=_STOP_GRACE_S)
        loop, stop = self._loop, self._stop_event
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)

    def status(self) -> StreamStatus | None:
        return None if self.streamer is None else self.streamer.status()


def _status_metadata(status: StreamStatus | None, started: float) -> dict[str, object]:
    if status is None:
        return {"connected": False, "uptime_s": round(time.monotonic() - started, 1)}
    lag = None
    if status.last_update_at is not None:
        lag = round(time.time() - status.last_update_at.timestamp(), 1)
    return {
        "connected": status.connected,
        "lines_in_use": status.lines_in_use,
        "line_budget": status.line_budget,
        "lines": f"{status.lines_in_use} / {status.line_budget}",
        "streamed_contracts": len(status.streamed_conids),
        "rows_flushed": status.rows_flushed,
        "queued_contracts": status.queued_count,
        "queue_rows_written": status.queue_rows_written,
        "unfit_active_legs": len(status.unfit),
        "demoted_legs": len(status.demoted),  # IB refused the contract (200/354); 101 never demotes
        "active_legs_not_held": len(status.legs_not_held),
        "ib_line_cap": status.line_cap,  # lines IB granted after a 101 (None: the budget applies)
        "rejections_101": status.rejections_101,
        "waiting_for_client_id": status.waiting_for_client_id,
        "ib_link_lost": status.link_lost,
        "competing_session_10197": status.competing_session,
        "unvalued_queued_holdings": status.valuations_missing,
        "registry_invalid_rows": status.registry_invalid_rows,
        "registry_unreadable": status.registry_error is not None,
        "reconnects": status.reconnects,
        "last_update_lag_s": lag,
        "uptime_s": round(time.monotonic() - started, 1),
        **_rotation_metadata(status),
    }


def _rotation_metadata(status: StreamStatus) -> dict[str, object]:
    """Issue 12: legs beyond the long-lived lines rotate through a pool; each one's score and age."""
    rotation = status.rotation
    if rotation is None:
        return {"rotating_legs": 0}
    legs = sorted(status.rotation_legs, key=lambda leg: -leg.score)[:50]
    table = "| conid | risk score | age s | line |\n|---|---|---|---|\n" + "\n".join(
        f"| {leg.conid} | {leg.score:.1f} | {'-' if leg.age_s is None else f'{leg.age_s:.1f}'} | {leg.line} |"
        for leg in legs
    )
    return {
        "rotating_legs": rotation.overflow,
        "rotation_pool_lines": rotation.pool_lines,
        "rotation_bound_s": None if rotation.bound_s is None else round(rotation.bound_s, 1),
        "rotation_max_age_s": None if rotation.max_age_s is None else round(rotation.max_age_s, 1),
        "rotation_quote_latency_p95_s": round(rotation.latency_p95_s, 3),
        "rotation_legs": dg.MetadataValue.md(table),
    }


class _Reporter:
    """Heartbeat every `heartbeat_interval_s`, asset events every `progress_interval_s`: never per tick."""

    def __init__(
        self,
        context: dg.OpExecutionContext,
        supervision: StreamSupervision,
        writer: HistoryWriter,
        latest: _LatestRows,
    ) -> None:
        self.context = context
        self.supervision = supervision
        self.writer = writer
        self.latest = latest
        self.started = time.monotonic()
        self._next_beat = 0.0
        self._next_progress = self.started + supervision.progress_interval_s
        self._rows_reported = 0
        self._queue_rows_reported = 0

    def tick(self, status: StreamStatus | None) -> dg.DagsterRunStatus | None:
        """Heartbeat and progress when due; returns the run's recorded status when it was read."""
        now = time.monotonic()
        run_status = None
        if now >= self._next_beat:
            run_status = self.beat(status)
        if now >= self._next_progress:
            self._next_progress = now + self.supervision.progress_interval_s
            self.progress(status)
        return run_status

    def beat(self, status: StreamStatus | None) -> dg.DagsterRunStatus | None:
        """Stamp the heartbeat; returns the run's status as the instance records it (None if unreadable).

        A failed write (a locked or unreachable run database) is logged, not raised: the stream goes on, and
        if the supervisor judges the run dead meanwhile, the next readable status says so.
        """
        self._next_beat = time.monotonic() + self.supervision.heartbeat_interval_s
        if status is None:
            tags = {LINES_TAG: "0", CONNECTED_TAG: "false"}
        else:
            tags = {
                LINES_TAG: str(status.lines_in_use),
                BUDGET_TAG: str(status.line_budget),
                CONNECTED_TAG: str(status.connected).lower(),
                ROTATION_BOUND_TAG: _bound_tag(status),
            }
        try:
            write_heartbeat(self.context.instance, self.context.run_id, extra=tags)
            return self.run_status()
        except Exception as exc:  # the stream must outlive a slow or broken run database
            self.context.log.warning(f"heartbeat not written: {type(exc).__name__}: {exc}")
            return None

    def first_beat(self) -> dg.DagsterRunStatus:
        """Before connecting: say which process runs the op, then read the status (in that order, so a
        supervisor that fenced the run and then sees no worker stamp knows it will never connect)."""
        self._next_beat = time.monotonic() + self.supervision.heartbeat_interval_s
        write_heartbeat(
            self.context.instance,
            self.context.run_id,
            extra={WORKER_TAG: worker_identity(), LINES_TAG: "0", CONNECTED_TAG: "false"},
        )
        return self.run_status()

    def run_status(self) -> dg.DagsterRunStatus:
        run = self.context.instance.get_run_by_id(self.context.run_id)
        return run.status if run is not None else dg.DagsterRunStatus.STARTED

    def progress(self, status: StreamStatus | None) -> None:
        metadata = _status_metadata(status, self.started)
        rows = status.rows_flushed if status else 0
        queue_rows = status.queue_rows_written if status else 0
        # New rows committed -> a materialization; otherwise an observation keeps status visible.
        event = dg.AssetMaterialization if rows > self._rows_reported else dg.AssetObservation
        self.context.log_event(
            event(
                asset_key="streamed_positions",
                metadata={
                    **metadata,
                    "rows_since_last_report": rows - self._rows_reported,
                    "rows_buffered": self.writer.buffered,
                    "latest_rows": rows_markdown(position_rows_frame(self.latest.rows())),
                },
            )
        )
        if queue_rows > self._queue_rows_reported:
            self.context.log_event(
                dg.AssetMaterialization(
                    asset_key="position_queue",
                    metadata={
                        "queued_contracts": metadata.get("queued_contracts", 0),
                        "queue_rows_written": queue_rows,
                    },
                )
            )
        self._rows_reported, self._queue_rows_reported = rows, queue_rows
        self.context.log.info(
            "stream: " + ", ".join(f"{k}={v}" for k, v in metadata.items() if k != "line_budget")
        )


def _bound_tag(status: StreamStatus) -> str:
    bound = status.rotation.bound_s if status.rotation is not None else None
    return "" if bound is None else f"{bound:.1f}"


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
    latest = _LatestRows()
    reporter = _Reporter(context, supervision, writer, latest)
    _claim_gateway(context, ib.gateway)
    # First heartbeat before connecting: the sensor's start-up grace ends here.
    _refuse_unless_clear(context, reporter, reporter.first_beat(), ib.gateway, supervision)
    thread = _StreamThread(settings, writer, latest)
    signalled = threading.Event()
    context.log.info(f"streaming from {ib.gateway} (clientId {ib.client_id}, budget {ib.line_budget} lines)")
    # Everything up to the run's last word runs with signals deferred, the final flush included.
    with _stop_on_signals(signalled):
        try:
            thread.start()
            fenced = _stream_until_stopped(context, config, reporter, thread, signalled)
        except BaseException:
            thread.request_stop()  # never leave a stream behind a failed op: the process may live on
            thread.join(timeout=_STOP_GRACE_S)
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
    reporter: _Reporter,
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
    reporter: _Reporter,
    thread: _StreamThread,
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
            if time.monotonic() - stopping_since > _STOP_GRACE_S:
                context.log.warning(f"the stream did not stop within {_STOP_GRACE_S:.0f}s: flushing anyway")
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


def _end_as_canceled(context: dg.OpExecutionContext, reporter: _Reporter, cause: str) -> NoReturn:
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
