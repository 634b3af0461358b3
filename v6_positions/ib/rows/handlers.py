"""Who receives the stream's observations (PositionRows), and how one failing receiver is kept from hurting
the others.

A handler is anything with `on_position_update`; one that commits the rows to a history table (a
`HistoryHandler`, such as `DeltaLakePositionWriter`) also reports its writer's stats, which the stream's
status shows."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from v6_positions.lake.history import HistoryWriter, WriterStats
from v6_positions.lake.rows import PositionRow

log = logging.getLogger(__name__)


@runtime_checkable
class PositionUpdateHandler(Protocol):
    async def on_position_update(self, row: PositionRow) -> None: ...


@runtime_checkable
class HistoryHandler(PositionUpdateHandler, Protocol):
    """A handler that commits the rows to a history table (streamed_positions)."""

    def history_stats(self) -> WriterStats: ...


@dataclass(slots=True)
class DispatchStats:
    """The handlers' side of the stream as its status shows it."""

    received: int  # rows submitted
    dispatched: int  # rows every handler was called with
    errors: int  # handler calls that raised
    rows_flushed: int  # rows the history handlers committed
    history: WriterStats | None  # the first history handler's writer; None without one


class DeltaLakePositionWriter:
    """Writes rows to `streamed_positions` through the micro-batching HistoryWriter.

    `on_position_update` only buffers (no I/O on the event loop); a background task commits whatever is
    buffered every `writer.flush_interval_s` in a worker thread, so a burst of ticks is one commit.
    """

    def __init__(self, writer: HistoryWriter) -> None:
        self.writer = writer
        self._flusher: asyncio.Task | None = None

    def history_stats(self) -> WriterStats:
        return self.writer.stats()

    async def on_position_update(self, row: PositionRow) -> None:
        self.writer.append(row)  # raises InvalidRowError for a bad row: nothing buffered
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        interval = max(0.05, self.writer.flush_interval_s)
        while True:
            await asyncio.sleep(interval / 4)  # checks 4x per interval: rows wait at most ~1.25 intervals
            if self.writer.due():
                try:
                    await asyncio.to_thread(self.writer.flush_if_due)
                except Exception:  # counted in writer.stats().flush_errors; rows stay buffered
                    log.exception("streamed_positions flush failed; retrying next interval")

    async def aclose(self) -> None:
        """Stop the background flusher and commit everything still buffered."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        await asyncio.to_thread(self.writer.close)


class HandlerDispatcher:
    """Feeds every row to every handler, in order, each call isolated.

    Rows go through one asyncio.Queue consumed by one task, kept referenced (a fire-and-forget task may be
    garbage-collected mid-run and its errors go unseen); a handler that raises is logged and counted, the
    others still run.
    """

    def __init__(self, handlers: Sequence[PositionUpdateHandler]) -> None:
        self.handlers = list(handlers)
        self._history = [handler for handler in self.handlers if isinstance(handler, HistoryHandler)]
        self._queue: asyncio.Queue[PositionRow | None] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self.received = 0
        self.dispatched = 0
        self.errors = 0

    def stats(self) -> DispatchStats:
        history = [handler.history_stats() for handler in self._history]
        return DispatchStats(
            self.received, self.dispatched, self.errors,
            rows_flushed=sum(stats.rows_flushed for stats in history),
            history=history[0] if history else None,
        )

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def submit(self, row: PositionRow) -> None:
        """Called from ib_async event callbacks (sync); never blocks."""
        self.received += 1
        self._queue.put_nowait(row)

    async def _run(self) -> None:
        while True:
            row = await self._queue.get()
            if row is None:
                return
            await self._dispatch(row)

    async def _dispatch(self, row: PositionRow) -> None:
        results = await asyncio.gather(
            *(_call(handler, row) for handler in self.handlers), return_exceptions=True
        )
        for handler, result in zip(self.handlers, results, strict=True):
            if isinstance(result, BaseException):
                self.errors += 1
                log.error(
                    "handler %s failed on conid=%s: %r", type(handler).__name__, row.conid, result,
                    exc_info=result if not isinstance(result, ValueError) else None,
                )
        self.dispatched += 1

    async def drain_and_close(self) -> None:
        """Deliver every row already received, then close handlers that have `aclose` (flush)."""
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None
        else:  # never started: deliver inline
            while not self._queue.empty():
                row = self._queue.get_nowait()
                if row is not None:
                    await self._dispatch(row)
        for handler in self.handlers:
            close = getattr(handler, "aclose", None)
            if close is None:
                continue
            try:
                await close()
            except Exception:
                log.exception("closing handler %s failed", type(handler).__name__)


async def _call(handler: PositionUpdateHandler, row: PositionRow) -> None:
    # Inside a coroutine, so even a handler that raises before its first await is caught by gather.
    await handler.on_position_update(row)
