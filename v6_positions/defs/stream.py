"""The stream job: one long-lived run that holds the IB stream, reports progress and a heartbeat.

The streamer (asyncio, ib_async) runs on its own event loop in a worker thread; the op's main thread only
waits on it, stamps the heartbeat, and logs progress at a bounded rate. Keeping Dagster calls on the main
thread matters twice: the run context is not thread-safe, and Dagster delivers termination (SIGTERM/SIGINT)
to the main thread as DagsterExecutionInterruptedError, which we turn into a clean stop: cancel streams,
flush buffered rows, disconnect.
"""

import asyncio
import threading
import time
from dataclasses import asdict

import dagster as dg

from v6_positions.config import Settings
from v6_positions.defs.heartbeat import STREAM_JOB_NAME, write_heartbeat
from v6_positions.defs.resources import IBResource, LakeResource, StreamSupervision, settings_of
from v6_positions.ib.handlers import DeltaLakePositionWriter
from v6_positions.ib.streamer import PositionStreamer, StreamStatus
from v6_positions.lake.history import HistoryWriter
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.registry import StrategyRegistry

# Run tags next to the heartbeat, so a reader of the run (sensor, checks) sees the line usage it vouches for.
LINES_TAG = "v6/lines-in-use"
BUDGET_TAG = "v6/line-budget"
CONNECTED_TAG = "v6/connected"

_POLL_S = 0.5  # how often the main thread wakes: bounds shutdown latency, not the event rate
_STOP_GRACE_S = 30.0  # time the streamer gets to cancel streams, flush and disconnect
_FENCED = (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE)


class StreamConfig(dg.Config):
    # 0 = run until terminated (production); tests and demos bound it.
    duration_s: float = 0.0


class _StreamThread(threading.Thread):
    """Builds the streamer on its own event loop (ib_async binds to the loop it is created on) and runs it."""

    def __init__(self, settings: Settings, writer: HistoryWriter) -> None:
        super().__init__(name="v6-position-stream", daemon=True)
        self._settings = settings
        self._writer = writer
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
        self.streamer = PositionStreamer(s, registry, queue, handlers=[DeltaLakePositionWriter(self._writer)])
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
        "demoted_after_101": len(status.demoted),
        "active_legs_not_held": len(status.legs_not_held),
        "reconnects": status.reconnects,
        "last_update_lag_s": lag,
        "uptime_s": round(time.monotonic() - started, 1),
    }


class _Reporter:
    """Heartbeat every `heartbeat_interval_s`, asset events every `progress_interval_s`: never per tick."""

    def __init__(self, context: dg.OpExecutionContext, supervision: StreamSupervision) -> None:
        self.context = context
        self.supervision = supervision
        self.started = time.monotonic()
        self._next_beat = 0.0
        self._next_progress = self.started + supervision.progress_interval_s
        self._rows_reported = 0
        self._queue_rows_reported = 0

    def tick(self, status: StreamStatus | None, *, force: bool = False) -> dg.DagsterRunStatus | None:
        """Heartbeat and progress when due; returns the run's recorded status when it was read."""
        now = time.monotonic()
        run_status = None
        if force or now >= self._next_beat:
            run_status = self.beat(status)
        if force or now >= self._next_progress:
            self._next_progress = now + self.supervision.progress_interval_s
            self.progress(status)
        return run_status

    def beat(self, status: StreamStatus | None) -> dg.DagsterRunStatus:
        """Stamp the heartbeat; returns the run's status as the instance records it."""
        instance, run_id = self.context.instance, self.context.run_id
        self._next_beat = time.monotonic() + self.supervision.heartbeat_interval_s
        write_heartbeat(instance, run_id)
        if status is not None:
            instance.add_run_tags(
                run_id,
                {
                    LINES_TAG: str(status.lines_in_use),
                    BUDGET_TAG: str(status.line_budget),
                    CONNECTED_TAG: str(status.connected).lower(),
                },
            )
        run = instance.get_run_by_id(run_id)
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
    )
    reporter = _Reporter(context, supervision)
    reporter.beat(None)  # first heartbeat before connecting: the sensor's start-up grace ends here
    thread = _StreamThread(settings, writer)
    context.log.info(f"streaming from {ib.gateway} (clientId {ib.client_id}, budget {ib.line_budget} lines)")
    thread.start()
    deadline = reporter.started + config.duration_s if config.duration_s > 0 else None
    fenced: dg.DagsterRunStatus | None = None
    try:
        while thread.is_alive():
            thread.join(timeout=_POLL_S)
            run_status = reporter.tick(thread.status())
            if fenced is None and run_status in _FENCED:
                # Marked canceling, or failed by the supervisor (a missed heartbeat): another stream run may
                # already hold the gateway, so this one must let go.
                fenced = run_status
                context.log.warning(f"run is {run_status.value} in the instance: stopping the stream")
                thread.request_stop()
            if deadline is not None and time.monotonic() >= deadline:
                context.log.info(f"duration {config.duration_s}s reached: stopping")
                deadline = None
                thread.request_stop()
    except dg.DagsterExecutionInterruptedError:
        context.log.info("run terminated: stopping the stream and flushing")
        _stop_and_flush(thread, writer)
        raise
    finally:
        writer.close()  # idempotent: the streamer's handler already flushed; this catches a wedged stream
    if thread.error is not None:
        raise thread.error
    status = thread.status()
    reporter.progress(status)
    context.log.info(f"stream stopped: {asdict(status) if status else 'never started'}")
    if fenced == dg.DagsterRunStatus.FAILURE:
        raise dg.Failure(f"stream stopped: the run was marked failed while streaming ({fenced.value})")


def _stop_and_flush(thread: _StreamThread, writer: HistoryWriter) -> None:
    thread.request_stop()
    thread.join(timeout=_STOP_GRACE_S)
    writer.close()


@dg.job(
    name=STREAM_JOB_NAME,
    # One process: a SIGKILL of the run worker takes the IB connection with it (no orphaned step process).
    executor_def=dg.in_process_executor,
    description="The long-lived position stream, launched and supervised by the stream_supervisor sensor.",
    tags={"v6/role": "stream"},
)
def position_stream_job() -> None:
    stream_positions()
