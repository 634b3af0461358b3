"""`v6-positions stream`: the streaming leg on its own (outside Dagster), a status line every few seconds."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from datetime import UTC, datetime

from v6_positions.config import Settings
from v6_positions.ib.rows.handlers import DeltaLakePositionWriter
from v6_positions.ib.stream_status import StreamStatus
from v6_positions.ib.streamer import PositionStreamer, StreamStopped
from v6_positions.lake.history import HistoryWriter
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.registry import StrategyRegistry

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    stream = subparsers.add_parser("stream", help="run the streaming leg on its own (outside Dagster)")
    _settings_flags(stream)
    stream.add_argument("--duration", type=float, default=None, help="stop after S seconds (default: run)")
    stream.add_argument("--status-every", type=float, default=5.0, help="seconds between status lines")
    stream.add_argument("--registry-poll", type=float, default=2.0, help="registry poll interval, seconds")
    stream.set_defaults(handler=run_stream)


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", dest="ib_host", default=None)
    parser.add_argument("--port", dest="ib_port", type=int, default=None)
    parser.add_argument("--client-id", dest="ib_client_id", type=int, default=None)
    parser.add_argument("--account", dest="ib_account", default=None)
    parser.add_argument("--max-lines", dest="max_lines", type=int, default=None)
    parser.add_argument("--reserved-lines", dest="reserved_lines", type=int, default=None)
    parser.add_argument("--lake-uri", dest="lake_uri", default=None)


def settings_from_args(args: argparse.Namespace) -> Settings:
    names = ("ib_host", "ib_port", "ib_client_id", "ib_account", "max_lines", "reserved_lines", "lake_uri")
    return Settings.from_env().with_overrides(**{name: getattr(args, name, None) for name in names})


def status_line(status: StreamStatus) -> str:
    age = "-"
    if status.last_update_at is not None:
        age = f"{(datetime.now(UTC) - status.last_update_at).total_seconds():.1f}s"
    if status.waiting_for_client_id:
        state = f"WAITING for clientId {status.client_id} (in use; retry {status.client_id_waits})"
    else:
        state = "connected" if status.connected else "DISCONNECTED"
    line = (
        f"{state} clientId={status.client_id} "
        f"lines={status.lines_in_use}/{status.line_budget} streamed={len(status.streamed_conids)} "
        f"queued={status.queued_count} unfit={len(status.unfit)} demoted={len(status.demoted)} "
        f"updates={status.updates_received} rows_flushed={status.rows_flushed} "
        f"reconnects={status.reconnects} last_update={age}"
    )
    if status.line_cap is not None or status.rejections_101:
        cap = "-" if status.line_cap is None else status.line_cap
        line += f" ib_cap={cap} 101s={status.rejections_101} probes={status.probes_won}/{status.probes}"
    if status.link_lost:
        line += " IB_LINK_LOST"
    if status.competing_session:
        line += " COMPETING_SESSION(10197)"
    if status.partial_data:
        line += f" partial_data={len(status.partial_data)}"
    rotation = status.rotation
    if rotation is not None:  # active legs beyond the long-lived lines rotate through a pool
        bound = "-" if rotation.bound_s is None else f"{rotation.bound_s:.1f}s"
        oldest = "-" if rotation.max_age_s is None else f"{rotation.max_age_s:.1f}s"
        line += f" rotating={rotation.overflow} pool={rotation.pool_lines} bound={bound} oldest={oldest}"
    line += f" valuation_sweeps={status.valuation_sweeps} unvalued={status.valuations_missing}"
    reconcile = status.reconcile
    if reconcile is not None and reconcile.last_at is not None:
        at = reconcile.last_at.astimezone(UTC).strftime("%H:%M:%S")
        line += f" reconciled={at} fixed={reconcile.last_fixed}"
    if reconcile is not None and reconcile.errors:
        line += f" reconcile_errors={reconcile.errors}"
    if status.registry_error:
        line += " REGISTRY_UNREADABLE(last known legs kept)"
    if status.registry_invalid_rows:
        line += f" registry_invalid_rows={status.registry_invalid_rows}"
    if status.queue_rows_rejected or status.queue_flush_errors:
        line += f" queue_rejected={status.queue_rows_rejected} queue_flush_errors={status.queue_flush_errors}"
    history = status.history
    if history is not None:
        line += (
            f" history_buffered={history.buffered} coalesced={history.coalesced} dropped={history.dropped} "
            f"flush_errors={history.flush_errors}"
        )
    return line


def run_stream(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    return asyncio.run(_stream(settings, args.duration, args.status_every, args.registry_poll))


async def _stream(
    settings: Settings, duration: float | None, status_every: float, registry_poll: float
) -> int:
    storage = settings.lake_storage_options or None
    writer = HistoryWriter(
        settings.lake_uri,
        "streamed_positions",
        storage,
        flush_interval_s=settings.flush_interval_s,
        buffer_cap=settings.stream_buffer_cap,
    )
    streamer = PositionStreamer(
        settings,
        StrategyRegistry(settings.lake_uri, storage),
        PositionQueue(settings.lake_uri, storage),
        [DeltaLakePositionWriter(writer)],
        registry_poll_s=registry_poll,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)
    run = asyncio.ensure_future(streamer.run(stop))
    started = time.monotonic()
    while not run.done():
        await asyncio.wait({run}, timeout=status_every)
        if not run.done():
            print(status_line(streamer.status()), flush=True)
    try:
        await run  # re-raises a crash of the streamer
    except StreamStopped as exc:
        print(status_line(streamer.status()), flush=True)
        print(f"v6-positions stream stopped: {exc}", file=sys.stderr, flush=True)
        return 2
    final = streamer.status()
    print(status_line(final), flush=True)
    print(
        f"stopped after {time.monotonic() - started:.1f}s: updates_received={final.updates_received} "
        f"updates_dispatched={final.updates_dispatched} handler_errors={final.handler_errors} "
        f"rows_flushed={final.rows_flushed} queue_rows_written={final.queue_rows_written}",
        flush=True,
    )
    return 0
