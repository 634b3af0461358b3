"""PositionStreamer: keeps the set of live streams equal to the set of held active legs that fit the budget.

Data flow: IB (positions, portfolio, ticks) -> routing -> streams (ticks -> handlers -> streamed_positions)
and the position queue (coalesced payload refreshes, one commit per batch). The session reconnects;
after every (re)connect the whole state is rebuilt from what IB reports, never patched.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ib_async import IB, Contract, PortfolioItem, Position, Ticker

from v6_positions.config import Settings
from v6_positions.ib.budget import LineBudget
from v6_positions.ib.errors import SUBSCRIPTION_REJECTED, describe
from v6_positions.ib.handlers import HandlerDispatcher, PositionUpdateHandler
from v6_positions.ib.holdings import Holding, HoldingKey, apply_portfolio, holding_from_position
from v6_positions.ib.queue_buffer import QueueBuffer
from v6_positions.ib.routing import PRIORITY_DEFAULT, Held, RoutingReport, route
from v6_positions.ib.session import IBSession, SessionConfig
from v6_positions.ib.subscriptions import SubscriptionRegistry
from v6_positions.ib.updates import (
    PositionUpdate,
    update_from_holding,
    update_from_portfolio,
    update_from_ticker,
)
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.registry import StrategyRegistry

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StreamStatus:
    connected: bool
    lines_in_use: int
    line_budget: int
    streamed_conids: list[int]
    queued_count: int
    rows_flushed: int
    reconnects: int
    demoted: dict[int, str]
    unfit: list[int]
    last_update_at: datetime | None
    # Detail for the status line, the Dagster checks and the tests.
    client_id: int = 0
    synced: bool = False
    updates_received: int = 0
    updates_dispatched: int = 0
    handler_errors: int = 0
    queue_rows_written: int = 0
    queue_commits: int = 0
    queue_buffered: int = 0
    legs_not_held: list[int] = field(default_factory=list)


class PositionStreamer:
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
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.budget = LineBudget.from_settings(settings)
        self.stream_sec_types = tuple(settings.stream_sec_types)
        self.registry_poll_s = registry_poll_s
        self.queue_flush_s = queue_flush_s
        self.session = IBSession(
            session_config or SessionConfig.from_settings(settings),
            ib,
            on_connected=self._on_connected,
            on_disconnected=self._on_disconnected,
            on_data_lost=self._on_data_lost,
        )
        self.ib = self.session.ib
        self.subs = SubscriptionRegistry(self.ib, generic_ticks)
        self.dispatcher = HandlerDispatcher(handlers)
        self.queue_buffer = QueueBuffer(queue)
        self._holdings: dict[HoldingKey, Holding] = {}
        self._active: set[int] = set()
        self._demoted: dict[int, str] = {}
        self._queued: dict[HoldingKey, int] = {}  # routed to the queue -> priority last sent
        self._reports: dict[tuple[int, str], RoutingReport] = {}
        self._stream_keys: dict[int, list[HoldingKey]] = {}  # streamed conid -> holdings (ticks fan out)
        self._synced = False
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()
        self.synced_event = asyncio.Event()  # set after each completed resync (tests wait on it)
        self.last_update_at: datetime | None = None
        self._wire_events()

    # -- public ----------------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Connect, route, stream and follow changes until `stop` is set; then stop cleanly."""
        stop = stop or asyncio.Event()
        self.dispatcher.start()
        loops = [
            self.session.run(stop),
            self._reconcile_loop(stop),
            self._registry_loop(stop),
            self._queue_loop(stop),
        ]
        tasks = [asyncio.ensure_future(coro) for coro in loops]
        try:
            await stop.wait()
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._shutdown()

    def status(self) -> StreamStatus:
        return StreamStatus(
            connected=self.session.connected,
            lines_in_use=self.subs.lines_in_use,
            line_budget=self.budget.available,
            streamed_conids=sorted(self.subs.live),
            queued_count=len(self._queued),
            rows_flushed=sum(int(getattr(h, "rows_flushed", 0)) for h in self.dispatcher.handlers),
            reconnects=self.session.reconnects,
            demoted=dict(self._demoted),
            unfit=sorted(r.conid for r in self._reports.values() if r.kind == "over_budget"),
            last_update_at=self.last_update_at,
            client_id=self.session.client_id,
            synced=self._synced,
            updates_received=self.dispatcher.received,
            updates_dispatched=self.dispatcher.dispatched,
            handler_errors=self.dispatcher.errors,
            queue_rows_written=self.queue_buffer.rows_written,
            queue_commits=self.queue_buffer.commits,
            queue_buffered=len(self.queue_buffer),
            legs_not_held=sorted(r.conid for r in self._reports.values() if r.kind == "leg_not_held"),
        )

    @property
    def reports(self) -> list[RoutingReport]:
        return list(self._reports.values())

    # -- connection lifecycle ------------------------------------------------------------------------------
    async def _on_connected(self, first: bool) -> None:
        """Rebuild everything from what IB just sent (positions, portfolio), then route and subscribe.

        The registry is read first: from reading `ib.positions()` to `_synced = True` nothing awaits, so no
        positionEvent can slip between the snapshot and the live handlers."""
        self.subs.connection_lost()  # ib_async dropped every Ticker on disconnect; IB freed the lines
        await self._refresh_registry(force=True)
        previous = self._holdings
        self._holdings = {}
        for position in self.ib.positions():
            self._absorb_position(position, startup=True)
        now = datetime.now(UTC)
        for item in self.ib.portfolio():
            holding = self._holdings.get((item.account, int(item.contract.conId)))
            if holding is not None:
                apply_portfolio(holding, item, now)
        for key in previous.keys() - self._holdings.keys():
            # Closed while we were away: record the close like a live one.
            self._record_close(previous[key], was_streamed=key[1] in self.subs.desired)
        self._synced = True
        await self._reconcile()
        await self.queue_buffer.flush()  # start-up routing lands in ONE commit
        log.info(
            "synced: %d holdings, %d streams, %d queued, %d reports",
            len(self._holdings), self.subs.lines_in_use, len(self._queued), len(self._reports),
        )
        self.synced_event.set()

    def _on_disconnected(self) -> None:
        self._synced = False
        self.synced_event.clear()
        self.subs.connection_lost()

    async def _on_data_lost(self) -> None:
        """1101: IB dropped every subscription but the socket stayed; request them all again."""
        async with self._lock:
            count = self.subs.replay(renew_live=True)
        log.warning("re-subscribed %d streams after 1101", count)
        account = self._account_for_updates()
        if account:  # the portfolio pushes went with the data; ask for them again
            try:
                await asyncio.wait_for(self.ib.reqAccountUpdatesAsync(account), 10.0)
            except (TimeoutError, ConnectionError) as exc:
                log.warning("account updates not restored after 1101: %r", exc)

    def _account_for_updates(self) -> str:
        if self.settings.ib_account:
            return self.settings.ib_account
        accounts = self.ib.managedAccounts()
        return accounts[0] if len(accounts) == 1 else ""

    async def _shutdown(self) -> None:
        connected = self.session.connected
        cancelled = self.subs.clear(connected=connected)
        log.info("stopping: cancelled %d streams", cancelled)
        await self.session.close()  # no more events after this: everything received is in the dispatcher
        await self.dispatcher.drain_and_close()
        await self.queue_buffer.flush()
        log.info(
            "stopped: %d updates received, %d dispatched, %d handler errors, %d queue rows written",
            self.dispatcher.received, self.dispatcher.dispatched, self.dispatcher.errors,
            self.queue_buffer.rows_written,
        )

    # -- routing -------------------------------------------------------------------------------------------
    async def _reconcile(self) -> None:
        async with self._lock:
            self._reconcile_now()

    def _reconcile_now(self) -> None:
        held = [Held(h.account, h.conid, h.sec_type, h.position) for h in self._holdings.values()]
        plan = route(
            held, self._active, self.budget, self.stream_sec_types,
            currently_streamed=self.subs.desired, demoted=self._demoted,
        )
        wanted = set(plan.streamed)
        connected = self.session.connected
        for conid in self.subs.desired - wanted:
            self.subs.remove(conid, connected=connected)
            log.info("stream cancelled: conid=%s", conid)
        for conid in plan.streamed:
            if conid in self.subs.desired:
                continue
            holding = self._holding_for(conid)
            if holding is None:  # cannot happen: routing only streams held conids
                continue
            self.subs.add(conid, stream_contract(holding.contract), connected=connected)
            log.info("stream started: conid=%s %s", conid, _label(holding.contract))
        if connected:
            replayed = self.subs.replay()  # after a reconnect: every wanted stream that is not live
            if replayed:
                log.info("re-subscribed %d streams", replayed)
        queued_now: dict[HoldingKey, int] = {}
        for decision in plan.queued:
            key = (decision.account, decision.conid)
            queued_now[key] = decision.priority
            if self._queued.get(key) != decision.priority:
                holding = self._holdings.get(key)
                if holding is not None:
                    self.queue_buffer.put(holding, decision.priority, force=True)
        self._queued = queued_now
        self._stream_keys = {}
        for key in self._holdings:
            if key[1] in wanted:
                self._stream_keys.setdefault(key[1], []).append(key)
        self._log_report_changes(plan.reports)

    def _log_report_changes(self, reports: Iterable[RoutingReport]) -> None:
        current = {(r.conid, r.kind): r for r in reports}
        for key, report in current.items():
            if key not in self._reports:
                level = logging.INFO if report.kind == "leg_not_held" else logging.WARNING
                log.log(level, "routing report: conid=%s %s: %s", report.conid, report.kind, report.detail)
        for key in self._reports.keys() - current.keys():
            log.info("routing report cleared: conid=%s %s", key[0], key[1])
        self._reports = current

    async def _reconcile_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._dirty.wait()
            self._dirty.clear()
            if not self._synced:
                continue
            try:
                await self._reconcile()
            except Exception:  # one bad reconcile must not end following change for the whole run
                log.exception("reconcile failed; retrying in 1s")
                await asyncio.sleep(1.0)
                self._mark_dirty()

    def _mark_dirty(self) -> None:
        self._dirty.set()

    # -- registry ------------------------------------------------------------------------------------------
    async def _registry_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.registry_poll_s)
                return
            except TimeoutError:
                pass
            try:
                if await self._refresh_registry(force=False):
                    self._mark_dirty()
            except Exception:
                log.exception("registry poll failed; keeping the last known active legs")

    async def _refresh_registry(self, *, force: bool) -> bool:
        """Re-read the active legs when the table version moved. True when the active set changed."""
        changed = await asyncio.to_thread(self.registry.refresh)
        if not changed and not force:
            return False
        legs = await asyncio.to_thread(self.registry.active_legs)
        conids = [int(leg.conid) for leg in legs]
        duplicates = sorted({c for c in conids if conids.count(c) > 1})
        if duplicates:
            log.warning("registry has duplicate active rows for conids %s; each is streamed once", duplicates)
        active = set(conids)
        if active == self._active and not force:
            return False
        for conid in self._active - active:
            if self._demoted.pop(conid, None) is not None:
                log.info("conid=%s no longer active: demotion cleared", conid)
        added, removed = active - self._active, self._active - active
        if added or removed:
            log.info("registry: %d active legs (+%s -%s)", len(active), sorted(added), sorted(removed))
        self._active = active
        return True

    # -- queue ---------------------------------------------------------------------------------------------
    async def _queue_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.queue_flush_s)
                return
            except TimeoutError:
                pass
            await self.queue_buffer.flush()

    # -- ib_async events -----------------------------------------------------------------------------------
    def _wire_events(self) -> None:
        self.ib.positionEvent += self._on_position
        self.ib.updatePortfolioEvent += self._on_portfolio
        self.ib.pendingTickersEvent += self._on_tickers
        self.ib.errorEvent += self._on_error

    def _wants_account(self, account: str) -> bool:
        return not self.settings.ib_account or account == self.settings.ib_account

    def _absorb_position(self, position: Position, *, startup: bool = False) -> Holding | None:
        if not self._wants_account(position.account):
            return None
        contract = position.contract
        if not contract.conId:
            log.warning("position without conId ignored: %s", contract)
            return None
        key = (position.account, int(contract.conId))
        if position.position == 0:
            if startup:
                log.debug("conid=%s closed (position 0): nothing to stream or queue", key[1])
            return None
        holding = self._holdings.get(key)
        if holding is None:
            holding = holding_from_position(position)
            self._holdings[key] = holding
            if contract.secType not in self.stream_sec_types:
                log.debug("conid=%s sec type %s is never streamed: queued", key[1], contract.secType)
        else:
            fresh = holding_from_position(position)
            holding.position, holding.average_cost = fresh.position, fresh.average_cost
        return holding

    def _on_position(self, position: Position) -> None:
        if not self._synced or not self._wants_account(position.account):
            return  # start-up positions are read in one go by _on_connected
        key = (position.account, int(position.contract.conId or 0))
        if position.position == 0:
            holding = self._holdings.pop(key, None)
            if holding is not None:
                holding.position = 0.0
                log.info("position closed: conid=%s", key[1])
                self._record_close(holding, was_streamed=key[1] in self.subs.desired)
                self._mark_dirty()
            return
        is_new = key not in self._holdings
        holding = self._absorb_position(position)
        if holding is None:
            return
        if is_new:
            log.info("position opened: conid=%s %s", key[1], _label(position.contract))
            self._mark_dirty()
        elif key in self._queued:
            self.queue_buffer.put(holding, self._queued[key])

    def _record_close(self, holding: Holding, *, was_streamed: bool) -> None:
        """A closed position gets a last row with position 0, so the current book drops it."""
        holding.position = 0.0
        holding.market_value = 0.0
        holding.unrealized_pnl = None
        if was_streamed:
            self._submit(update_from_holding(holding))
        else:
            self.queue_buffer.put(holding, PRIORITY_DEFAULT, force=True)

    def _on_portfolio(self, item: PortfolioItem) -> None:
        if not self._synced or not self._wants_account(item.account):
            return
        key = (item.account, int(item.contract.conId or 0))
        if item.position == 0:
            return  # positionEvent carries the close
        holding = self._holdings.get(key)
        if holding is None:
            return  # not (yet) a known position; positionEvent adds it
        apply_portfolio(holding, item, datetime.now(UTC))
        if key[1] in self.subs.desired:
            self._submit(update_from_portfolio(item))
        else:
            # Coalesced: many pushes of one contract before the next flush are one queue row.
            self.queue_buffer.put(holding, self._queued.get(key, PRIORITY_DEFAULT))

    def _on_tickers(self, tickers: Iterable[Ticker]) -> None:
        for ticker in tickers:
            contract = ticker.contract
            if contract is None:
                continue
            conid = int(contract.conId)
            if not self.subs.is_live(conid):
                continue  # late ticks of a cancelled stream, or a Ticker someone else asked for
            for holding in self._holdings_for(conid):
                try:
                    self._submit(update_from_ticker(ticker, holding))
                except Exception:
                    log.exception("could not build an update for conid=%s; tick skipped", conid)

    def _on_error(self, req_id: int, code: int, message: str, contract: Contract | None = None) -> None:
        if code not in SUBSCRIPTION_REJECTED:
            return
        conid = int(contract.conId) if contract is not None and contract.conId else None
        if conid is None or conid not in self.subs.desired:
            conid = self.subs.conid_for_req_id(req_id)
        if conid is None or conid not in self.subs.desired:
            return  # not one of our streams (e.g. a contract details request)
        reason = f"{describe(code)} ({code}): {message}"
        self._demoted[conid] = reason
        self.subs.remove(conid, connected=self.session.connected)  # frees ib_async's Ticker; no line was held
        log.warning("stream rejected by IB, demoted to the queue: conid=%s %s", conid, reason)
        self._mark_dirty()

    def _submit(self, update: PositionUpdate) -> None:
        self.last_update_at = datetime.now(UTC)
        self.dispatcher.submit(update)

    # -- lookups -------------------------------------------------------------------------------------------
    def _holdings_for(self, conid: int) -> list[Holding]:
        keys = self._stream_keys.get(conid)
        if keys is None:
            return [h for key, h in self._holdings.items() if key[1] == conid]
        return [self._holdings[key] for key in keys if key in self._holdings]

    def _holding_for(self, conid: int) -> Holding | None:
        found = self._holdings_for(conid)
        return found[0] if found else None


def stream_contract(contract: Contract) -> Contract:
    """The contract to request data for: a copy, routed SMART when the position came without an exchange."""
    requested = copy.copy(contract)
    if not requested.exchange:
        requested.exchange = "SMART"
    return requested


def _label(contract: Contract) -> str:
    parts: Mapping[str, object] = {
        "symbol": contract.symbol, "secType": contract.secType,
        "expiry": contract.lastTradeDateOrContractMonth, "strike": contract.strike, "right": contract.right,
    }
    return " ".join(str(v) for v in parts.values() if v)
