"""PositionStreamer: keeps the set of live streams equal to the set of held active legs that fit the lines.

Data flow: IB (positions, ticks, zero-line valuations) -> routing -> streams (ticks -> handlers ->
streamed_positions) and the position queue (coalesced payload refreshes, one commit per batch). The session
reconnects; after every (re)connect the whole state is rebuilt from what IB reports, never patched.

A polite guest on a shared gateway: never asks for account updates (valuations of queued holdings come from
a paced reqPnLSingle sweep, `valuations.py`); takes only the lines IB grants (`lines.py`: a 101 caps the
limit, freed lines are won back by one probe at a time); adds new streams one at a time, each confirmed by
IB's data before the next, so a full account answers one 101, never a burst.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from ib_async import IB, Contract, PnLSingle, Position, Ticker

from v6_positions.config import Settings
from v6_positions.ib.budget import LineBudget
from v6_positions.ib.errors import (
    COMPETING_SESSION,
    MAX_TICKERS,
    PARTIAL_MARKET_DATA,
    SUBSCRIPTION_REJECTED,
    describe,
)
from v6_positions.ib.handlers import HandlerDispatcher, PositionUpdateHandler
from v6_positions.ib.holdings import Holding, HoldingKey, apply_pnl, holding_from_position
from v6_positions.ib.lines import LineGrant
from v6_positions.ib.queue_buffer import QueueBuffer
from v6_positions.ib.risk import risk_score
from v6_positions.ib.risk_inputs import combined_position, leg_risk_input
from v6_positions.ib.rotation import LegStatus, RotationConfig, RotationScheduler, RotationSummary
from v6_positions.ib.rotator import LineRotator
from v6_positions.ib.routing import PRIORITY_DEFAULT, Held, RoutingPlan, RoutingReport, route
from v6_positions.ib.session import IBSession, SessionConfig
from v6_positions.ib.subscriptions import SubscriptionRegistry
from v6_positions.ib.updates import PositionUpdate, update_from_holding, update_from_ticker
from v6_positions.ib.valuations import ValuationSweep
from v6_positions.ib.values import clean_price
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.registry import StrategyRegistry

log = logging.getLogger(__name__)

# A new stream that got neither IB's acceptance nor an error this long after its request is taken as held.
CONFIRM_TIMEOUT_S = 5.0
# Time a Delta commit of streamed rows may take, counted into the rotation's staleness bound.
COMMIT_ALLOWANCE_S = 0.5
# Valuations per second of the reqPnLSingle sweep while the rotating pool also sends messages.
SWEEP_PER_SECOND_WITH_ROTATION = 10
# How often the legs are ranked again while some rotate (greeks and prices move the risk scores).
RERANK_INTERVAL_S = 10.0
# How often unconfirmed new streams are checked for IB's acceptance (tickReqParams), only while there are any.
CONFIRM_POLL_S = 0.01


class StreamStopped(RuntimeError):
    """The stream stopped itself because of a problem a retry cannot fix (named in the message)."""


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
    # Sharing the gateway.
    line_cap: int | None = None  # lines IB granted after a 101 (None: never refused, the budget applies)
    rejections_101: int = 0
    probes: int = 0
    probes_won: int = 0
    waiting_for_client_id: bool = False  # the clientId is in use: waiting for it, holding no line
    client_id_waits: int = 0
    link_lost: bool = False  # 1100: the gateway lost IB; waiting for 1101/1102/farm OK
    competing_session: bool = False  # 10197: another login of this user takes the market data
    partial_data: dict[int, str] = field(default_factory=dict)  # 10090/10091 warnings per streamed conid
    accounts: list[str] = field(default_factory=list)
    # Zero-line valuations of queued holdings.
    valuation_sweeps: int = 0
    valuations_missing: int = 0  # in the last sweep: holdings IB gave no value for (logged by conid)
    last_valuation_sweep_s: float | None = None
    # The registry.
    registry_error: str | None = None  # last read failed: the last known active legs are kept
    registry_invalid_rows: int = 0  # rows skipped because they break the table's contract
    # HistoryWriter.stats() of the streamed_positions writer, when it has one.
    history: object | None = None
    # Active legs that do not fit rotate through a pool of lines (issue 12); None when none rotate.
    rotation: RotationSummary | None = None
    rotation_legs: list[LegStatus] = field(default_factory=list)  # per leg: score, role, line, age
    risk_scores: dict[int, float] = field(default_factory=dict)  # every streamable active leg's score

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
        valuation_interval_s: float | None = None,  # default: settings.valuation_interval_s
        valuations_per_second: int = 15,
        confirm_timeout_s: float = CONFIRM_TIMEOUT_S,
        probe_base_s: float | None = None,
        probe_cap_s: float | None = None,
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
        probe_timing = {
            name: value for name, value in (("probe_base_s", probe_base_s), ("probe_cap_s", probe_cap_s))
            if value is not None
        }
        self.lines = LineGrant(self.budget.available, **probe_timing)  # type: ignore[arg-type]
        self.confirm_timeout_s = confirm_timeout_s
        self.valuations = ValuationSweep(
            self.ib, self._queued_keys, self._on_valuation, lambda: self._synced and self.session.connected,
            interval_s=valuation_interval_s or settings.valuation_interval_s,
            # With the rotating pool on, the sweep leaves it room: 2 x 10 + the pool's 20 messages/s stay
            # under ib_async's 45/s throttle, so no request (the heartbeat among them) waits in its queue.
            per_second=valuations_per_second
            if settings.rotation_lines == 0
            else min(valuations_per_second, SWEEP_PER_SECOND_WITH_ROTATION),
        )
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
        self._partial_data: dict[int, str] = {}
        self._competing_session = False
        self._registry_error: str | None = None
        self._registry_stale = False  # the last registry read failed: re-read on the next poll
        self._registry_invalid: list[object] = []  # rows breaking the table's contract: skipped, reported
        self._wake_timer: asyncio.TimerHandle | None = None
        self._awaiting_confirmation = asyncio.Event()
        # From the last routing plan: legs to stream once the stream in flight is confirmed, and the legs that
        # wait for lines (in routing order). Lets each confirmation add the next stream without re-routing.
        self._pending_adds: list[int] = []
        self._unfit_order: list[int] = []
        self._stop: asyncio.Event | None = None
        self.fatal_error: str | None = None
        # The rotating pool: active legs beyond the long-lived lines share `settings.rotation_lines` lines.
        self.rotator: LineRotator | None = None
        if settings.rotation_lines > 0:
            # a quote's row is committed within a flush interval plus the commit itself
            config = RotationConfig(
                floor_lines=settings.rotation_lines,
                flush_interval_s=settings.flush_interval_s + COMMIT_ALLOWANCE_S,
            )
            self.rotator = LineRotator(
                self.ib,
                RotationScheduler(config, time.monotonic),
                self._on_rotation_quote,
                generic_ticks=generic_ticks,
                enabled=lambda: self._synced and self.session.connected,
                on_full=self._on_rotation_full,
            )
        self._risk: dict[int, float] = {}
        self._greeks: dict[int, object] = {}  # conid -> IB's newest model greeks (OptionComputation)
        self._ranked_at = -math.inf
        self._pool = 0  # lines the rotating pool may hold now (from the last route)
        self._wire_events()

    # -- public ----------------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Connect, route, stream and follow changes until `stop` is set; then stop cleanly."""
        stop = stop or asyncio.Event()
        self._stop = stop
        self.dispatcher.start()
        loops = [
            self.session.run(stop),
            self._reconcile_loop(stop),
            self._registry_loop(stop),
            self._queue_loop(stop),
            self.valuations.run(stop),
            self._confirm_loop(stop),
        ]
        if self.rotator is not None:
            loops.append(self._rotation_loop(stop))
        tasks = [asyncio.ensure_future(coro) for coro in loops]
        try:
            await stop.wait()
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._wake_timer is not None:
                self._wake_timer.cancel()
            await self._shutdown()
        if self.fatal_error is not None:
            raise StreamStopped(self.fatal_error)

    def status(self) -> StreamStatus:
        lines = self.lines.stats()
        sweep = self.valuations.stats
        writer_stats = None
        for handler in self.dispatcher.handlers:
            stats = getattr(getattr(handler, "writer", None), "stats", None)
            if callable(stats):
                writer_stats = stats()
                break
        return StreamStatus(
            connected=self.session.connected,
            lines_in_use=self._lines_held(),
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
            line_cap=lines.cap,
            rejections_101=lines.rejections,
            probes=lines.probes,
            probes_won=lines.probes_won,
            waiting_for_client_id=self.session.waiting_for_client_id,
            client_id_waits=self.session.client_id_waits,
            link_lost=self.session.link_lost,
            competing_session=self._competing_session,
            partial_data=dict(self._partial_data),
            accounts=sorted({key[0] for key in self._holdings}),
            valuation_sweeps=sweep.sweeps,
            valuations_missing=len(sweep.last_missing),
            last_valuation_sweep_s=sweep.last_sweep_s,
            registry_error=self._registry_error,
            registry_invalid_rows=len(self._registry_invalid),
            history=writer_stats,
            rotation=self._rotation_summary(),
            rotation_legs=self.rotator.scheduler.status() if self.rotator else [],
            risk_scores=dict(self._risk),
        )

    @property
    def reports(self) -> list[RoutingReport]:
        return list(self._reports.values())

    # -- connection lifecycle ------------------------------------------------------------------------------
    async def _on_connected(self, first: bool) -> None:
        """Rebuild everything from what IB just sent (positions), then route and subscribe.

        The registry is read first: from reading `ib.positions()` to `_synced = True` nothing awaits, so no
        positionEvent can slip between the snapshot and the live handlers."""
        self.subs.connection_lost()  # ib_async dropped every Ticker on disconnect; IB freed the lines
        if self.rotator is not None:
            self.rotator.connection_lost()
        if not self._check_accounts():
            return
        try:
            await self._refresh_registry(force=True)
        except Exception as exc:  # an unreadable registry must not turn into a reconnect loop
            self._registry_failed(exc)
        previous = self._holdings
        self._holdings = {}
        for position in self.ib.positions():
            self._absorb_position(position, startup=True)
        for key, holding in previous.items():  # keep the last valuation until the next sweep replaces it
            fresh = self._holdings.get(key)
            if fresh is not None and holding.payload_time is not None:
                fresh.market_price, fresh.market_value = holding.market_price, holding.market_value
                fresh.unrealized_pnl, fresh.realized_pnl = holding.unrealized_pnl, holding.realized_pnl
                fresh.payload_time = holding.payload_time
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
        self.valuations.kick()  # queued holdings get IB's valuation now, not one interval later

    def _check_accounts(self) -> bool:
        """V6_IB_ACCOUNT must be one this login manages; with it empty, every managed account is followed."""
        accounts = self.ib.managedAccounts()
        wanted = self.settings.ib_account
        if wanted and wanted not in accounts:
            self._fail(
                f"V6_IB_ACCOUNT={wanted!r} is not managed by this login (managed accounts: "
                f"{', '.join(accounts) or 'none'}); set it to one of them, or empty to follow all"
            )
            return False
        if not wanted and len(accounts) > 1:
            log.info("no V6_IB_ACCOUNT set: following all %d managed accounts %s", len(accounts), accounts)
        return True

    def _fail(self, message: str) -> None:
        log.error("stopping the stream: %s", message)
        self.fatal_error = message
        if self._stop is not None:
            self._stop.set()

    def _on_disconnected(self) -> None:
        self._synced = False
        self.synced_event.clear()
        self.subs.connection_lost()
        if self.rotator is not None:
            self.rotator.connection_lost()

    async def _on_data_lost(self) -> None:
        """1101: IB dropped every subscription but the socket stayed; request market data AND positions
        again (a position closed meanwhile is only noticed by what the fresh positions list lacks)."""
        async with self._lock:
            count = self.subs.replay(renew_live=True)
            if self.rotator is not None:
                self.rotator.connection_lost()  # the pool starts over with the next poll
        self._awaiting_confirmation.set()
        log.warning("re-subscribed %d streams after 1101", count)
        try:
            self.ib.client.cancelPositions()
            positions = await asyncio.wait_for(self.ib.reqPositionsAsync(), 10.0)
        except (TimeoutError, ConnectionError) as exc:
            log.warning("positions not restored after 1101 (%r); reconnecting", exc)
            self.session.request_reconnect("positions not restored after 1101")
            return
        present = {
            (p.account, int(p.contract.conId)) for p in positions
            if p.position != 0 and self._wants_account(p.account)
        }
        for key in [key for key in self._holdings if key not in present]:
            holding = self._holdings.pop(key)
            log.info("position closed while IB data was down: conid=%s", key[1])
            self._record_close(holding, was_streamed=key[1] in self.subs.desired)
        log.info("positions re-requested after 1101: %d held", len(present))
        self._mark_dirty()
        self.valuations.kick()

    async def _shutdown(self) -> None:
        connected = self.session.connected
        cancelled = self.subs.clear(connected=connected)
        if self.rotator is not None:
            self.rotator.stop()
            if connected:
                cancelled += self.rotator.release_all()
            else:
                self.rotator.connection_lost()
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

    def _route(self):
        held = [Held(h.account, h.conid, h.sec_type, h.position) for h in self._holdings.values()]
        limit = self.lines.limit
        if self.lines.capped and limit < self.budget.available:
            reason = (f"account full at IB: {self.lines.cap} lines granted to this stream "
                      f"(budget {self.budget.available}); other clients hold the rest, probing for more")
        else:
            reason = f"line budget {self.budget.available} is full"
        rank = self._rank() if self.rotator is not None else None
        plan = route(
            held, self._active, limit, self.stream_sec_types,
            currently_streamed=self.subs.desired, demoted=self._demoted, full_reason=reason, rank=rank,
        )
        self._pool = 0
        if self.rotator is not None and plan.unfit and limit >= 2:
            # Some active legs do not fit: a pool of lines rotates through them; the riskiest keep the rest.
            self._pool = min(self.settings.rotation_lines, limit // 2)
            reason = f"rotating through {self._pool} lines ({limit - self._pool} long-lived lines are full)"
            plan = route(
                held, self._active, limit - self._pool, self.stream_sec_types,
                currently_streamed=self.subs.desired, demoted=self._demoted, full_reason=reason, rank=rank,
            )
        return plan

    def _rank(self) -> dict[int, float]:
        """Risk score of every held, streamable, active leg (`risk.py`): who gets the long-lived lines.

        Scores are recomputed every RERANK_INTERVAL_S only (a new leg is scored at once): between re-ranks the
        long-lived set stays put, so lines never churn on every tick of drifting greeks."""
        positions: dict[int, list[float]] = {}
        contracts: dict[int, Contract] = {}
        for holding in self._holdings.values():
            conid = holding.conid
            if conid in self._active and holding.sec_type in self.stream_sec_types and holding.position:
                positions.setdefault(conid, []).append(holding.position)
                contracts.setdefault(conid, holding.contract)
        now = datetime.now(UTC)
        due = time.monotonic() - self._ranked_at >= RERANK_INTERVAL_S
        if not due and contracts.keys() == self._risk.keys():
            return self._risk
        if due:
            self._ranked_at = time.monotonic()
        # IB's newest model greeks per leg, kept across streaming, rotating and waiting: a score must not jump
        # back to "unknown, so at the money" whenever the leg's line changes hands.
        for conid in contracts:
            ticker = self.subs.ticker(conid) or (self.rotator.ticker(conid) if self.rotator else None)
            model = getattr(ticker, "modelGreeks", None)
            if model is not None:
                self._greeks[conid] = model
        for conid in [c for c in self._greeks if c not in contracts]:
            del self._greeks[conid]
        spots: dict[str, float] = {}  # the underlying price from any leg's greeks, for legs not quoted yet
        for conid, model in self._greeks.items():
            spot = clean_price(model.undPrice)
            if spot is not None:
                spots[contracts[conid].symbol] = spot
        scores: dict[int, float] = {}
        for conid, contract in contracts.items():
            if not due and conid in self._risk:
                scores[conid] = self._risk[conid]
                continue
            try:
                leg = leg_risk_input(contract, combined_position(positions[conid]), self._greeks.get(conid))
                if leg is not None and leg.spot is None and contract.symbol in spots:
                    leg = replace(leg, spot=spots[contract.symbol])
                scores[conid] = risk_score(leg, now).score if leg is not None else 0.0
            except ValueError as exc:  # an odd contract is ranked last, never a reason to stop
                log.debug("conid=%s not ranked: %s", conid, exc)
                scores[conid] = 0.0
        self._risk = scores
        return scores

    def _rotate(self, plan: RoutingPlan) -> None:
        """Hand the legs that did not fit to the rotating pool (they stay queued too: the batch backs it)."""
        if self.rotator is None:
            return
        legs: dict[int, Contract] = {}
        for conid in plan.unfit if self._pool else ():
            holding = self._holding_for(conid)
            if holding is not None:
                legs[conid] = stream_contract(holding.contract)
        self.rotator.set_legs(legs, self._risk)
        self.rotator.set_budget(self._pool)

    def _rotation_summary(self) -> RotationSummary | None:
        if self.rotator is None or not self.rotator.scheduler.legs:
            return None
        return self.rotator.scheduler.summary()

    def _lines_held(self) -> int:
        """Lines this stream holds at IB: long-lived streams plus the rotating pool's."""
        return self.subs.lines_in_use + (self.rotator.lines_held() if self.rotator is not None else 0)

    def _on_rotation_quote(self, conid: int, ticker: Ticker) -> None:
        """A usable quote of a rotating leg: one row per holding, like a streamed tick."""
        for holding in self._holdings_for(conid):
            try:
                self._submit(update_from_ticker(ticker, holding))
            except Exception:
                log.exception("could not build an update for rotating conid=%s; quote skipped", conid)

    def _on_rotation_full(self) -> None:
        """A rotation subscribe got 101: the account is full; cap the stream at what it holds."""
        self.lines.refused(self._lines_held())
        self._mark_dirty()

    async def _rotation_loop(self, stop: asyncio.Event) -> None:
        assert self.rotator is not None
        task = asyncio.ensure_future(self.rotator.run())
        try:
            while not stop.is_set():  # re-rank now and then: quotes move the scores, the best keep the lines
                try:
                    await asyncio.wait_for(stop.wait(), RERANK_INTERVAL_S)
                except TimeoutError:
                    if self.rotator.scheduler.legs:
                        self._mark_dirty()
        finally:
            self.rotator.stop()
            await asyncio.gather(task, return_exceptions=True)

    def _reconcile_now(self) -> None:
        self._confirm_overdue()
        plan = self._route()
        if plan.unfit and self.lines.capped and self.lines.start_probe():
            log.info("probing IB for one more line (holding %d, cap %s)",
                     self.subs.lines_in_use, self.lines.cap)
            plan = self._route()
        wanted = set(plan.streamed)
        connected = self.session.connected
        for conid in self.subs.desired - wanted:
            self.subs.remove(conid, connected=connected)
            self._partial_data.pop(conid, None)
            log.info("stream cancelled: conid=%s", conid)
        if self.lines.probing and not (wanted - self.subs.desired) and not self.subs.unconfirmed:
            self.lines.abandon_probe()  # nothing left to probe with (the leg went away)
        if connected:
            replayed = self.subs.replay()  # after a reconnect: every wanted stream that is not live
            if replayed:
                log.info("re-subscribed %d streams", replayed)
                self._awaiting_confirmation.set()
            # One new stream at a time, each confirmed by IB first: a full account costs one 101.
            self._pending_adds = [conid for conid in plan.streamed if conid not in self.subs.desired]
            if not self.subs.unconfirmed:
                self._add_pending()
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
        self._unfit_order = [r.conid for r in plan.reports if r.kind == "over_budget"]
        self._rotate(plan)
        self._schedule_wake()

    def _add_pending(self) -> bool:
        """Request the next stream the last plan wanted; True when one was requested."""
        while self._pending_adds:
            conid = self._pending_adds.pop(0)
            if conid in self.subs.desired or conid not in self._active or conid in self._demoted:
                continue
            if self._start_stream(conid):
                return True
        return False

    def _start_stream(self, conid: int) -> bool:
        holding = self._holding_for(conid)
        if holding is None:
            return False
        if self.rotator is not None:
            self.rotator.release(conid)  # promoted from the pool: its rotating line goes first
        self.subs.add(conid, stream_contract(holding.contract), connected=True)
        log.info("stream requested: conid=%s %s", conid, _label(holding.contract))
        self._stream_keys[conid] = [key for key in self._holdings if key[1] == conid]
        self._awaiting_confirmation.set()
        return True

    def _advance(self) -> None:
        """After a confirmation: the next planned stream, or the next probe while IB caps the lines, without
        re-routing every holding (one route per new line would be O(lines x holdings) at start-up)."""
        if self.subs.unconfirmed or not self._synced or not self.session.connected:
            return
        if self._add_pending():
            return
        if self._unfit_order and self.lines.capped and self.lines.start_probe():
            conid = self._unfit_order.pop(0)
            if conid in self._active and conid not in self.subs.desired and self._start_stream(conid):
                # What the next route would say: it streams now, so it is neither queued nor unfit.
                for key in [key for key in self._queued if key[1] == conid]:
                    del self._queued[key]
                self._reports.pop((conid, "over_budget"), None)
                return
            self.lines.abandon_probe()
        self._mark_dirty()  # nothing planned is left: a full route settles the rest
    def _confirm_overdue(self) -> None:
        """A new stream silent past the confirm timeout holds its line (IB's 101 would have come at once)."""
        now = time.monotonic()
        for conid in self.subs.unconfirmed:
            requested = self.subs.requested_at(conid)
            if requested is not None and now - requested >= self.confirm_timeout_s:
                self._confirmed(conid)

    async def _confirm_loop(self, stop: asyncio.Event) -> None:
        """IB accepts a reqMktData with tickReqParams at once (ib_async sets `ticker.minTick`, no event),
        while the first quote may take a while: accepting on it keeps one-at-a-time subscription fast."""
        while not stop.is_set():
            await self._awaiting_confirmation.wait()
            self._awaiting_confirmation.clear()
            while self.subs.unconfirmed and not stop.is_set():
                for conid in self.subs.unconfirmed:
                    ticker = self.subs.ticker(conid)
                    if ticker is not None and _accepted(ticker):
                        self._confirmed(conid)
                await asyncio.sleep(CONFIRM_POLL_S)

    def _confirmed(self, conid: int) -> None:
        if self.subs.confirm(conid):
            self.lines.granted(self._lines_held())
            self._advance()

    def _schedule_wake(self) -> None:
        """Reconcile again when the next probe is due or a silent new stream reaches its confirm timeout."""
        delays = []
        probe_in = self.lines.seconds_to_probe()
        if probe_in is not None and any(r.kind == "over_budget" for r in self._reports.values()):
            delays.append(probe_in)
        now = time.monotonic()
        for conid in self.subs.unconfirmed:
            requested = self.subs.requested_at(conid)
            if requested is not None:
                delays.append(max(0.0, requested + self.confirm_timeout_s - now))
        if self._wake_timer is not None:
            self._wake_timer.cancel()
            self._wake_timer = None
        if delays:
            self._wake_timer = asyncio.get_running_loop().call_later(min(delays) + 0.01, self._mark_dirty)

    def _log_report_changes(self, reports: Iterable[RoutingReport]) -> None:
        current = {(r.conid, r.kind): r for r in reports}
        for key, report in current.items():
            if key not in self._reports:
                # While IB caps the lines, the probed leg flips between streamed and unfit on every probe: the
                # 101 itself was logged as a warning already.
                quiet = report.kind == "leg_not_held" or (report.kind == "over_budget" and self.lines.capped)
                level = logging.INFO if quiet else logging.WARNING
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
                if await self._refresh_registry(force=self._registry_stale):
                    self._mark_dirty()
            except Exception as exc:
                self._registry_failed(exc)

    def _registry_failed(self, exc: Exception) -> None:
        first = self._registry_error is None
        self._registry_error = f"{type(exc).__name__}: {exc}"
        self._registry_stale = True
        level = logging.WARNING if first else logging.DEBUG
        log.log(level, "strategy_registry unreadable (%s); keeping the last known %d active legs",
                self._registry_error, len(self._active), exc_info=first)


    async def _refresh_registry(self, *, force: bool) -> bool:
        """Re-read the active legs when the table version moved. True when the active set changed."""
        changed = await asyncio.to_thread(self.registry.refresh)
        if not changed and not force:
            return False
        legs = await asyncio.to_thread(self.registry.active_legs)
        invalid = await asyncio.to_thread(self.registry.invalid_rows)
        if [str(row) for row in invalid] != [str(row) for row in self._registry_invalid] and invalid:
            log.warning("strategy_registry: %d invalid rows skipped (first: %s)", len(invalid), invalid[0])
        self._registry_invalid = list(invalid)
        if self._registry_error is not None:
            log.info("strategy_registry readable again")
        self._registry_error, self._registry_stale = None, False
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

    def _queued_keys(self) -> list[HoldingKey]:
        """Holdings the valuation sweep refreshes: every queued one, most urgent first (rotating legs get
        fresh quotes from the pool and are left out)."""
        rotating = self.rotator.contracts if self.rotator is not None else {}
        keys = [key for key in self._queued if key[1] not in rotating]
        return sorted(keys, key=lambda key: (self._queued[key], key))

    def _on_valuation(self, key: HoldingKey, pnl: PnLSingle) -> bool:
        holding = self._holdings.get(key)
        if holding is None:
            return True  # closed meanwhile: nothing to value, nothing missing
        if not apply_pnl(holding, pnl.value, pnl.unrealizedPnL, pnl.realizedPnL, datetime.now(UTC)):
            return False
        if key in self._queued:
            # Coalesced: many refreshes of one contract before the next flush are one queue row.
            self.queue_buffer.put(holding, self._queued[key])
        return True

    def _on_tickers(self, tickers: Iterable[Ticker]) -> None:
        for ticker in tickers:
            contract = ticker.contract
            if contract is None:
                continue
            conid = int(contract.conId)
            if not self.subs.is_live(conid):
                continue  # late ticks of a cancelled stream, or a Ticker someone else asked for
            self._confirmed(conid)
            if self._competing_session:
                log.info("market data flowing again after a competing live session")
                self._competing_session = False
            for holding in self._holdings_for(conid):
                try:
                    self._submit(update_from_ticker(ticker, holding))
                except Exception:
                    log.exception("could not build an update for conid=%s; tick skipped", conid)

    def _on_error(self, req_id: int, code: int, message: str, contract: Contract | None = None) -> None:
        if code not in SUBSCRIPTION_REJECTED | MAX_TICKERS | PARTIAL_MARKET_DATA | COMPETING_SESSION:
            return
        conid = self.subs.conid_for_req_id(req_id)  # the reqId names the request; a contract may be re-used
        if conid is None:
            conid = int(contract.conId) if contract is not None and contract.conId else None
        if conid is None or conid not in self.subs.desired:
            return  # not one of our streams (e.g. a contract details request)
        reason = f"{describe(code)} ({code}): {message}"
        if code in MAX_TICKERS:
            # The account is full now (other clients hold the lines): not the contract's fault. The leg
            # waits queued at top priority and streams again as soon as a probe finds a free line.
            self.subs.remove(conid, connected=self.session.connected)  # no line was held
            self.lines.refused(self._lines_held())
            log.warning("101 on conid=%s: account full at IB; this stream holds %d lines, probing in %.1fs",
                        conid, self.subs.lines_in_use, self.lines.seconds_to_probe() or 0.0)
            self._mark_dirty()
            return
        if code in PARTIAL_MARKET_DATA:
            if conid not in self._partial_data:
                log.warning("conid=%s streams with part of its data missing: %s", conid, reason)
            self._partial_data[conid] = reason
            self._confirmed(conid)  # the line is held; the rest of the data streams
            return
        if code in COMPETING_SESSION:
            if not self._competing_session:
                log.warning("no market data: %s (another login of this user is live; streams resume "
                            "after it)", reason)
            self._competing_session = True
            self._confirmed(conid)  # IB holds the line during the competing session
            return
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


def _accepted(ticker: Ticker) -> bool:
    """IB answered the request with its tick parameters or data: the line is held."""
    min_tick = ticker.minTick
    return (min_tick is not None and not math.isnan(min_tick)) or ticker.time is not None


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
