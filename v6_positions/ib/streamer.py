"""PositionStreamer: keeps the set of live streams equal to the set of held active legs that fit the lines.

Data flow: IB (positions, ticks, zero-line valuations) -> routing -> streams (ticks -> handlers ->
streamed_positions) and the position queue (coalesced payload refreshes, one commit per batch). The session
reconnects; after every (re)connect the whole state is rebuilt from what IB reports, never patched.

A polite guest on a shared gateway: never asks for account updates (valuations of queued holdings come from
a paced reqPnLSingle sweep, `zero_line/valuation_sweep.py`); takes only the lines IB grants
(`lines/ledger.py`: a 101 caps the limit, freed lines are won back by one probe at a time); adds new streams
one at a time, each confirmed by IB's data before the next, so a full account answers one 101, never a burst.

The streamer is the wiring: `__init__` builds each owner after everything it is given, so no owner calls
one built later, and IB's events reach the owners only through the handlers below (`_on_*`), which say
where each event goes. Each owner keeps its own state and reports it (`stats()`):
  connection/session.py         the connection (connect, heartbeat, reconnect, clientId waits)
  account/book.py               what the account holds (holdings, valuations, FA accounts), synced or not
  account/active_legs.py        the registry's active legs (polled; last known kept while unreadable)
  lines/ledger.py               every line the stream holds, against what IB grants
  lines/stream_errors.py        IB's verdicts on our streams (101, 200/354, partial data, competing session)
  lines/allocation.py           which legs hold a line now, the queue routing, one new stream at a time
  lines/pool.py                 the rotating pool for legs beyond the lines (off with V6_ROTATION_LINES=0)
  rows/sink.py                  where rows go (handlers, position queue)
  zero_line/valuation_sweep.py  the queued holdings' valuations
`stream_status.py` puts their stats together into the status snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from ib_async import IB, Contract, PnLSingle, Position, Ticker

from v6_positions.config import Settings
from v6_positions.ib.account.active_legs import ActiveLegs
from v6_positions.ib.account.book import AccountBook
from v6_positions.ib.account.connect_reconcile import ConnectReconciler
from v6_positions.ib.account.holdings import HoldingKey, apply_pnl
from v6_positions.ib.connection.session import IBSession, SessionConfig
from v6_positions.ib.lines.allocation import LineAllocation
from v6_positions.ib.lines.ledger import LineLedger
from v6_positions.ib.lines.pool import stream_rotator
from v6_positions.ib.lines.stream_errors import StreamErrors, Verdict
from v6_positions.ib.lines.subscriptions import SubscriptionRegistry, contract_label
from v6_positions.ib.routing.plan import RoutingReport
from v6_positions.ib.routing.ranking import RERANK_INTERVAL_S
from v6_positions.ib.rows.handlers import HandlerDispatcher, PositionUpdateHandler
from v6_positions.ib.rows.queue_buffer import QueueBuffer
from v6_positions.ib.rows.sink import RowSink
from v6_positions.ib.stream_status import StreamStatus, status_from_stats
from v6_positions.ib.zero_line.valuation_sweep import ValuationSweep
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.registry import StrategyRegistry

log = logging.getLogger(__name__)

# A new stream that got neither IB's acceptance nor an error this long after its request is taken as held.
CONFIRM_TIMEOUT_S = 5.0
# Cancels per second when stopping (of IB's 50 messages/s): 100 streams take ~4 s, never a burst.
STOP_CANCELS_PER_SECOND = 25
# Valuations per second of the reqPnLSingle sweep while the rotating pool also sends messages.
SWEEP_PER_SECOND_WITH_ROTATION = 8


class StreamStopped(RuntimeError):
    """The stream stopped itself because of a problem a retry cannot fix (named in the message)."""


class PositionStreamer:
    """Builds the owners in dependency order and runs them: the account book (holdings), the active legs
    (registry), IB's verdicts, the lines (ledger, streams, pool), where rows go, the line allocation, the
    valuation sweep and, last, the session (connection) whose events start everything; turns IB's events
    into the owners' calls."""

    def __init__(
        self,
        settings: Settings,
        registry: StrategyRegistry,
        queue: PositionQueue,
        handlers: Sequence[PositionUpdateHandler] = (),
        *,
        registry_poll_s: float = 2.0,
        queue_flush_s: float = 2.0,
        session_config: SessionConfig | None = None,
        ib: IB | None = None,
        generic_ticks: str = "",
        valuation_interval_s: float | None = None,  # default: settings.valuation_interval_s
        valuations_per_second: int = 15,
        confirm_timeout_s: float = CONFIRM_TIMEOUT_S,
        probe_base_s: float | None = None,
        probe_cap_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.ib = ib or IB()  # no events reach it before the session connects it (built last, below)
        self.fatal_error: str | None = None
        self._stop: asyncio.Event | None = None
        # What is held and what is active.
        self.account = AccountBook(settings.ib_account, settings.stream_sec_types)
        probe_timing = {
            name: value for name, value in (("probe_base_s", probe_base_s), ("probe_cap_s", probe_cap_s))
            if value is not None
        }
        # The lines: every line the stream takes (long-lived, pool, probe) is counted in the ledger, against
        # what IB grants; IB's verdicts on the long-lived streams are kept apart from who holds a line.
        self.lines = LineLedger(settings.line_budget, **probe_timing)  # type: ignore[arg-type]
        self.subs = SubscriptionRegistry(self.ib, generic_ticks, self.lines)
        self.stream_errors = StreamErrors(self.subs)
        self.legs = ActiveLegs(registry, registry_poll_s, on_deactivated=self.stream_errors.deactivated)
        # Where rows go: streamed rows to the handlers, queued holdings to the position queue.
        self.dispatcher = HandlerDispatcher(handlers)
        self.queue_buffer = QueueBuffer(queue)
        self.sink = RowSink(self.dispatcher, self.queue_buffer, queue_flush_s)
        self.reconciler = ConnectReconciler(queue.root_uri, queue.storage_options, settings.ib_account)
        # The rotating pool: active legs beyond the long-lived lines share `settings.rotation_lines` lines.
        self.rotator = stream_rotator(
            self.ib, settings, self._on_quote, generic_ticks=generic_ticks, enabled=self._streaming,
            ledger=self.lines,
        )
        self.allocation = LineAllocation(
            account=self.account,
            legs=self.legs,
            verdicts=self.stream_errors,
            subs=self.subs,
            lines=self.lines,
            rotator=self.rotator,
            queue_buffer=self.queue_buffer,
            connected=self.ib.isConnected,
            confirm_timeout_s=confirm_timeout_s,
        )
        self.valuations = ValuationSweep(
            self.ib, self.allocation.valuation_keys, self._on_valuation, self._streaming,
            interval_s=valuation_interval_s or settings.valuation_interval_s,
            # With the rotating pool on, the sweep leaves it room: 2 x 8 + the pool's 20 messages/s (a 30
            # burst at most) stay around the client's 40/s throttle (session.MAX_MESSAGES_PER_S), so a
            # request (the heartbeat among them) waits at most a moment in its queue.
            per_second=valuations_per_second
            if settings.rotation_lines == 0
            else min(valuations_per_second, SWEEP_PER_SECOND_WITH_ROTATION),
        )
        # The connection last: its events (connected, disconnected, data lost) reach every owner above.
        self.session = IBSession(
            session_config or SessionConfig.from_settings(settings),
            self.ib,
            on_connected=self._on_connected,
            on_disconnected=self._on_disconnected,
            on_data_lost=self._on_data_lost,
        )
        self.ib.positionEvent += self._on_position
        self.ib.pendingTickersEvent += self._on_tickers
        self.ib.errorEvent += self._on_error

    # -- public ----------------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Connect, route, stream and follow changes until `stop` is set; then stop cleanly."""
        stop = stop or asyncio.Event()
        self._stop = stop
        self.dispatcher.start()
        loops = [
            self.session.run(stop),
            self.allocation.run(stop),
            self.legs.run(stop, self.allocation.mark_dirty),
            self.sink.run(stop),
            self.valuations.run(stop),
            self.allocation.confirm_loop(stop),
        ]
        if self.rotator is not None:
            loops.append(self.rotator.run_until(stop, RERANK_INTERVAL_S, self.allocation.mark_dirty))
        tasks = [asyncio.ensure_future(coro) for coro in loops]
        try:
            await stop.wait()
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.allocation.cancel_wake()
            await self._shutdown()
        if self.fatal_error is not None:
            raise StreamStopped(self.fatal_error)

    def status(self) -> StreamStatus:
        """The snapshot of every owner's own stats."""
        return status_from_stats(
            session=self.session.stats(),
            account=self.account.stats(),
            legs=self.legs.stats(),
            ledger=self.lines.stats(),
            allocation=self.allocation.stats(),
            verdicts=self.stream_errors.stats(),
            dispatch=self.dispatcher.stats(),
            queue=self.queue_buffer.stats(),
            sink=self.sink.stats(),
            sweep=self.valuations.stats(),
            pool=self.rotator.stats() if self.rotator is not None else None,
            reconcile=self.reconciler.stats(),
        )

    @property
    def reports(self) -> list[RoutingReport]:
        return list(self.allocation.reports.values())

    def _streaming(self) -> bool:
        """The book is synced and the socket up: the pool and the sweep may send requests."""
        return self.account.synced and self.ib.isConnected()

    # -- connection lifecycle ------------------------------------------------------------------------------
    async def _on_connected(self, first: bool) -> None:
        """Rebuild everything from what IB just sent (positions), then route and subscribe.

        The registry is read first: from reading `ib.positions()` to the rebuilt (synced) book nothing
        awaits, so no positionEvent can slip between the snapshot and the live handlers."""
        self.subs.connection_lost()  # ib_async dropped every Ticker on disconnect; IB freed the lines
        if self.rotator is not None:
            self.rotator.connection_lost()
        error = self.account.check_accounts(self.ib.managedAccounts())
        if error is not None:
            self._fail(error)
            return
        try:
            await self.legs.refresh(force=True)
        except Exception as exc:  # an unreadable registry must not turn into a reconnect loop
            self.legs.failed(exc)
        streamed = self.subs.desired
        for holding in self.account.rebuild(self.ib.positions()):  # synced from here on
            # Closed while we were away: record the close like a live one.
            self.sink.closed(holding, was_streamed=holding.conid in streamed)
        await self.allocation.reconcile()
        await self.queue_buffer.flush()  # start-up routing lands in ONE commit
        log.info(
            "synced: %d holdings, %d streams, %d queued, %d reports",
            len(self.account.holdings), self.subs.lines_in_use, len(self.allocation.queued),
            len(self.allocation.reports),
        )
        self.valuations.kick()  # queued holdings get IB's valuation now, not one interval later
        self.reconciler.start(self.ib.positions(), self.ib.managedAccounts())  # the book against IB's list

    def _fail(self, message: str) -> None:
        log.error("stopping the stream: %s", message)
        self.fatal_error = message
        if self._stop is not None:
            self._stop.set()

    def _on_disconnected(self) -> None:
        self.account.connection_lost()
        self.subs.connection_lost()
        if self.rotator is not None:
            self.rotator.connection_lost()

    async def _on_data_lost(self) -> str | None:
        """1101: IB dropped every subscription but the socket stayed; request market data AND positions
        again (a position closed meanwhile is only noticed by what the fresh positions list lacks). Returns
        why the session must renew the socket instead, or None."""
        count = await self.allocation.renew_after_data_lost()
        log.warning("re-subscribed %d streams after 1101", count)
        try:
            self.ib.client.cancelPositions()
            positions = await asyncio.wait_for(self.ib.reqPositionsAsync(), 10.0)
        except (TimeoutError, ConnectionError) as exc:
            log.warning("positions not restored after 1101 (%r); reconnecting", exc)
            return "positions not restored after 1101"
        streamed = self.subs.desired
        for holding in self.account.retain(positions):
            log.info("position closed while IB data was down: conid=%s", holding.conid)
            self.sink.closed(holding, was_streamed=holding.conid in streamed)
        held = sum(1 for p in positions if p.position != 0 and self.account.wants(p.account))
        log.info("positions re-requested after 1101: %d held", held)
        self.allocation.mark_dirty()
        self.valuations.kick()
        self.reconciler.start(positions, self.ib.managedAccounts())
        return None

    async def _shutdown(self) -> None:
        connected = self.session.connected
        cancelled = 0
        if self.rotator is not None:
            self.rotator.stop()
            if connected and self.rotator.scheduler.legs:
                await asyncio.sleep(1.0)  # the rotation and the sweep used this second's messages
            if connected:
                cancelled += self.rotator.release_all()
            else:
                self.rotator.connection_lost()
        cancelled += await self.subs.clear_paced(STOP_CANCELS_PER_SECOND, connected=connected, sent=cancelled)
        log.info("stopping: cancelled %d streams", cancelled)
        await self.session.close()  # no more events after this: everything received is in the dispatcher
        await self.sink.close()
        await self.reconciler.stop()

    # -- ib_async events -----------------------------------------------------------------------------------
    def _on_position(self, position: Position) -> None:
        if not self.account.synced:
            return  # start-up positions are read in one go by _on_connected
        change = self.account.on_position(position)
        if change is None:
            return
        holding = change.holding
        if change.kind == "closed":
            log.info("position closed: conid=%s", holding.conid)
            self.sink.closed(holding, was_streamed=holding.conid in self.subs.desired)
            self.allocation.mark_dirty()
        elif change.kind == "opened":
            log.info("position opened: conid=%s %s", holding.conid, contract_label(position.contract))
            self.allocation.mark_dirty()
        else:
            self.allocation.requeue(holding)

    def _on_valuation(self, key: HoldingKey, pnl: PnLSingle) -> bool:
        holding = self.account.holdings.get(key)
        if holding is None:
            return True  # closed meanwhile: nothing to value, nothing missing
        if not apply_pnl(
            holding, pnl.value, pnl.unrealizedPnL, pnl.realizedPnL, datetime.now(UTC), pnl.dailyPnL
        ):
            return False
        self.allocation.requeue(holding)
        return True

    def _on_tickers(self, tickers: Iterable[Ticker]) -> None:
        for ticker in tickers:
            contract = ticker.contract
            if contract is None:
                continue
            conid = int(contract.conId)
            if not self.subs.is_live(conid):
                continue  # late ticks of a cancelled stream, or a Ticker someone else asked for
            self.allocation.data_arrived(conid)
            self.stream_errors.data_flowing()
            self._on_quote(conid, ticker)

    def _on_quote(self, conid: int, ticker: Ticker) -> None:
        self.sink.quote(conid, ticker, self.account.holdings_for(conid))

    def _on_error(self, req_id: int, code: int, message: str, contract: Contract | None = None) -> None:
        """IB's verdict on one of our streams decides who holds its line (other errors are not ours here)."""
        verdict = self.stream_errors.judge(req_id, code, message, contract)
        if verdict is None:
            return
        if verdict.kind is Verdict.REFUSED:
            self.allocation.refused(verdict.conid)
        elif verdict.kind is Verdict.HELD:
            self.allocation.confirmed(verdict.conid)
        else:
            self.allocation.rejected(verdict.conid)
