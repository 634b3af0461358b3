"""The streamer on its own event loop in a worker thread, and the newest row per contract it has seen.

ib_async binds to the loop it is created on, so the `PositionStreamer` is built and run inside the thread.
The op's main thread only asks it to stop and reads its status: Dagster's run context is not thread-safe,
so nothing here touches Dagster.
"""

from __future__ import annotations

import asyncio
import threading

from v6_positions.config import Settings
from v6_positions.ib.rows.handlers import DeltaLakePositionWriter
from v6_positions.ib.stream_status import StreamStatus
from v6_positions.ib.streamer import PositionStreamer
from v6_positions.lake.history import HistoryWriter, PositionRow
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.registry import StrategyRegistry

STOP_GRACE_S = 30.0  # time the streamer gets to cancel streams, flush and disconnect


class LatestRows:
    """A handler that keeps the newest row per contract, for the progress events' table (no storage read)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, int], PositionRow] = {}
        self._lock = threading.Lock()

    async def on_position_update(self, row: PositionRow) -> None:
        with self._lock:
            self._rows[(row.account, row.conid)] = row

    def rows(self) -> list[PositionRow]:
        with self._lock:
            return list(self._rows.values())


class StreamThread(threading.Thread):
    """Builds the streamer on its own event loop (ib_async binds to the loop it is created on) and runs it."""

    def __init__(self, settings: Settings, writer: HistoryWriter, latest: LatestRows) -> None:
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
        self._ready.wait(timeout=STOP_GRACE_S)
        loop, stop = self._loop, self._stop_event
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)

    def status(self) -> StreamStatus | None:
        return None if self.streamer is None else self.streamer.status()
