"""Where the stream's observations go: streamed rows to the handlers (streamed_positions), queued holdings to
the position queue (coalesced, one commit per flush)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from ib_async import Ticker

from v6_positions.ib.account.book import mark_closed
from v6_positions.ib.account.holdings import Holding
from v6_positions.ib.periodic import stopped_within
from v6_positions.ib.routing.plan import PRIORITY_DEFAULT
from v6_positions.ib.rows.handlers import HandlerDispatcher
from v6_positions.ib.rows.observations import row_from_holding, row_from_ticker
from v6_positions.ib.rows.queue_buffer import QueueBuffer
from v6_positions.lake.rows import PositionRow

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SinkStats:
    last_update_at: datetime | None  # when the last row went to the handlers


class RowSink:
    def __init__(self, dispatcher: HandlerDispatcher, queue_buffer: QueueBuffer, flush_s: float) -> None:
        self.dispatcher = dispatcher
        self.queue_buffer = queue_buffer
        self.flush_s = flush_s
        self.last_update_at: datetime | None = None  # when the last row went to the handlers

    def stats(self) -> SinkStats:
        return SinkStats(self.last_update_at)

    def quote(self, conid: int, ticker: Ticker, holdings: Iterable[Holding]) -> None:
        """A tick of a stream, or a usable quote of a rotating leg: one row per holding."""
        for holding in holdings:
            try:
                self.submit(row_from_ticker(ticker, holding))
            except Exception:
                log.exception("could not build an update for conid=%s; tick skipped", conid)

    def closed(self, holding: Holding, *, was_streamed: bool) -> None:
        """A closed position gets a last row with position 0, so the current book drops it."""
        mark_closed(holding)
        if was_streamed:
            self.submit(row_from_holding(holding))
        else:
            self.queue_buffer.put(holding, PRIORITY_DEFAULT, force=True)

    def submit(self, row: PositionRow) -> None:
        self.last_update_at = datetime.now(UTC)
        self.dispatcher.submit(row)

    async def run(self, stop: asyncio.Event) -> None:
        """Flush the queue buffer every `flush_s` until `stop`."""
        while not await stopped_within(stop, self.flush_s):
            await self.queue_buffer.flush()

    async def close(self) -> None:
        """After the connection closed: everything received reaches the handlers and the queue."""
        await self.dispatcher.drain_and_close()
        await self.queue_buffer.flush()
        log.info(
            "stopped: %d updates received, %d dispatched, %d handler errors, %d queue rows written",
            self.dispatcher.received, self.dispatcher.dispatched, self.dispatcher.errors,
            self.queue_buffer.rows_written,
        )
