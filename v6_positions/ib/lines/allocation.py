"""Which held active legs hold a streaming line now, and how the stream gets there from where it is.

Owns the routing outcome (queued holdings and their priorities, reports) and applies each plan politely: one
new stream at a time, each confirmed by IB (tickReqParams, data, or silence past a timeout) before the next,
so a full account answers one 101, never a burst. How many lines the stream may hold, and how they split
between long-lived streams and the rotating pool, comes from the line ledger (`lines/ledger.py`), which every
line goes through; while IB caps the lines, the split gives the one line beyond the grant (the probe, paced by
the ledger) to one more long-lived stream. Legs that do not fit rotate through the pool when it is on
(`lines/pool.py`), ranked by risk (`routing/ranking.py`); the queue backs them all. Legs IB refused are read
from IB's verdicts (`lines/stream_errors.py`), which the streamer hands here one by one.

The plan, its one-at-a-time application and IB's verdicts on each stream read and write the same pending
adds, queued holdings and reports, so they live in one class.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from v6_positions.ib.account.active_legs import ActiveLegs
from v6_positions.ib.account.book import AccountBook
from v6_positions.ib.account.holdings import Holding, HoldingKey
from v6_positions.ib.lines.ledger import STREAM, LineLedger, quiet_refusal_lines
from v6_positions.ib.lines.pool import LineRotator
from v6_positions.ib.lines.stream_errors import StreamErrors
from v6_positions.ib.lines.subscriptions import SubscriptionRegistry, contract_label, stream_contract
from v6_positions.ib.routing.plan import RoutingPlan, RoutingReport, route
from v6_positions.ib.routing.ranking import RiskRanking
from v6_positions.ib.rows.queue_buffer import QueueBuffer

log = logging.getLogger(__name__)

# How often unconfirmed new streams are checked for IB's acceptance (tickReqParams), only while there are any.
CONFIRM_POLL_S = 0.01


@dataclass(slots=True)
class AllocationStats:
    """The routing outcome as the stream's status shows it."""

    streamed: list[int]  # conids with a live stream, sorted
    queued: int  # holdings routed to the position queue
    unfit: list[int]  # active legs beyond the lines (over_budget reports), sorted
    legs_not_held: list[int]  # active legs the account does not hold, sorted
    risk_scores: dict[int, float]  # every streamable active leg's score (ranked only while the pool is on)


class LineAllocation:
    def __init__(
        self,
        *,
        account: AccountBook,
        legs: ActiveLegs,
        verdicts: StreamErrors,
        subs: SubscriptionRegistry,
        lines: LineLedger,
        rotator: LineRotator | None,
        queue_buffer: QueueBuffer,
        connected: Callable[[], bool],
        confirm_timeout_s: float,
    ) -> None:
        """Reads what is held (`account`, and whether it is synced), what is active (`legs`) and what IB
        refused (`verdicts`); holds lines through `subs` (long-lived streams) and `rotator` (the pool, None
        when off), both counted in the ledger `lines`; sends queued holdings to `queue_buffer`; `connected`
        says whether the socket is up (requests and cancels go out only then)."""
        self.account, self.legs, self.verdicts = account, legs, verdicts
        self.subs, self.lines, self.rotator = subs, lines, rotator
        self.queue_buffer = queue_buffer
        self._connected = connected
        self.confirm_timeout_s = confirm_timeout_s
        # Ranks the active legs for the long-lived lines; only the pool's overflow needs a ranking.
        self.ranking = RiskRanking()
        self.queued: dict[HoldingKey, int] = {}  # routed to the queue -> priority last sent
        self.reports: dict[tuple[int, str], RoutingReport] = {}
        # From the last plan: legs to stream once the stream in flight is confirmed. Lets each confirmation
        # add the next stream without re-routing.
        self._pending_adds: list[int] = []
        self._pool = 0  # lines the rotating pool may hold now (from the last route)
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()
        self._awaiting_confirmation = asyncio.Event()
        self._wake_timer: asyncio.TimerHandle | None = None
        # The grant or the probe changed, or a line freed up for a waiting stream: route again.
        lines.watch(self.mark_dirty)
        quiet_refusal_lines()  # ib_async logs every 101; the ledger logs each change of the grant

    # -- what the stream holds -----------------------------------------------------------------------------
    @property
    def budget(self) -> int:
        """The configured line budget (V6_MAX_LINES - V6_RESERVED_LINES); IB may grant fewer (the ledger)."""
        return self.lines.configured

    def stats(self) -> AllocationStats:
        reports = self.reports.values()
        return AllocationStats(
            streamed=sorted(self.subs.live),
            queued=len(self.queued),
            unfit=sorted(r.conid for r in reports if r.kind == "over_budget"),
            legs_not_held=sorted(r.conid for r in reports if r.kind == "leg_not_held"),
            risk_scores=dict(self.ranking.scores),
        )

    def requeue(self, holding: Holding) -> None:
        """A queued holding changed: coalesced, many refreshes before the next flush are one queue row."""
        priority = self.queued.get(holding.key)
        if priority is not None:
            self.queue_buffer.put(holding, priority)

    def valuation_keys(self) -> list[HoldingKey]:
        """Holdings the valuation sweep refreshes: every queued one, most urgent first (rotating legs get
        fresh quotes from the pool and are left out)."""
        rotating = self.rotator.contracts if self.rotator is not None else {}
        keys = [key for key in self.queued if key[1] not in rotating]
        return sorted(keys, key=lambda key: (self.queued[key], key))

    # -- reconcile -----------------------------------------------------------------------------------------
    def mark_dirty(self) -> None:
        self._dirty.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile whenever something changed, until `stop`."""
        while not stop.is_set():
            await self._dirty.wait()
            self._dirty.clear()
            if not self.account.synced:
                continue
            try:
                await self.reconcile()
            except Exception:  # one bad reconcile must not end following change for the whole run
                log.exception("reconcile failed; retrying in 1s")
                await asyncio.sleep(1.0)
                self.mark_dirty()

    async def reconcile(self) -> None:
        async with self._lock:
            self._reconcile_now()

    async def renew_after_data_lost(self) -> int:
        """1101: IB dropped every subscription, the socket stayed: request every stream again."""
        async with self._lock:
            if self.rotator is not None:
                self.rotator.connection_lost()  # the pool starts over with the next poll
            count = self.subs.replay(renew_live=True)
        self._awaiting_confirmation.set()
        return count

    def _route(self) -> RoutingPlan:
        held = self.account.held()
        limit = self.lines.limit
        if self.lines.capped and limit < self.budget:
            reason = (f"account full at IB: {self.lines.cap} lines granted to this stream "
                      f"(budget {self.budget}); other clients hold the rest, probing for more")
        else:
            reason = f"line budget {self.budget} is full"
        rank = self._rank() if self.rotator is not None else None
        active, sec_types, demoted = self.legs.conids, self.account.stream_sec_types, self.verdicts.demoted
        plan = route(
            held, active, limit, sec_types,
            currently_streamed=self.subs.desired, demoted=demoted, full_reason=reason, rank=rank,
        )
        self._pool = 0
        if self.rotator is not None and plan.unfit:
            # Some active legs do not fit: a pool of lines rotates through them; the riskiest keep the rest.
            wanting = len(plan.streamed) + len(plan.unfit)
            long_lived, self._pool = self.lines.split(wanting, self.rotator.configured_lines)
            if self._pool:
                reason = f"{reason}; rotating through a pool of {self._pool} ({long_lived} long-lived lines)"
                plan = route(
                    held, active, long_lived, sec_types,
                    currently_streamed=self.subs.desired, demoted=demoted, full_reason=reason, rank=rank,
                )
        return plan

    def _rank(self) -> dict[int, float]:
        rotator = self.rotator
        return self.ranking.rank(
            self.account.ranked_legs(self.legs.conids),
            lambda conid: self.subs.ticker(conid) or (rotator.ticker(conid) if rotator else None),
        )

    def _reconcile_now(self) -> None:
        for conid in self.subs.overdue(self.confirm_timeout_s):  # silent past the timeout: the line is held
            self.confirmed(conid)
        plan = self._route()
        wanted = set(plan.streamed)
        connected = self._connected()
        to_pool = set(plan.unfit) if self._pool else set()
        for conid in self.subs.desired - wanted:
            self.subs.remove(conid, connected=connected)
            self.verdicts.stream_cancelled(conid)
            # A leg moving to the pool keeps its quotes: its routing report carries the news (and while IB
            # caps the lines, the leg a probe promoted goes back there after every refused probe).
            if conid in to_pool:
                log.debug("stream cancelled: conid=%s (rotates through the pool)", conid)
            else:
                log.info("stream cancelled: conid=%s", conid)
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
            if self.queued.get(key) != decision.priority:
                holding = self.account.holdings.get(key)
                if holding is not None:
                    self.queue_buffer.put(holding, decision.priority, force=True)
        self.queued = queued_now
        self.account.set_streamed(wanted)
        self._log_report_changes(plan.reports)
        self._rotate(plan)
        self._schedule_wake()

    def _rotate(self, plan: RoutingPlan) -> None:
        """Hand the legs that did not fit to the rotating pool (they stay queued too: the batch backs it)."""
        if self.rotator is None:
            return
        legs = {}
        for conid in plan.unfit if self._pool else ():
            holding = self.account.holding_for(conid)
            if holding is not None:
                legs[conid] = stream_contract(holding.contract)
        self.rotator.set_legs(legs, self.ranking.scores)
        self.rotator.set_budget(self._pool)

    def _log_report_changes(self, reports: Iterable[RoutingReport]) -> None:
        current = {(r.conid, r.kind): r for r in reports}
        # While IB caps the lines, the probed leg flips between streamed and unfit on every probe: the ledger
        # logs each change of the grant, so these flips are no news.
        flipping = self.lines.capped
        for key, report in current.items():
            if key not in self.reports:
                if report.kind == "over_budget" and flipping:
                    level = logging.DEBUG
                elif report.kind == "leg_not_held":
                    level = logging.INFO
                else:
                    level = logging.WARNING
                log.log(level, "routing report: conid=%s %s: %s", report.conid, report.kind, report.detail)
        for key in self.reports.keys() - current.keys():
            level = logging.DEBUG if key[1] == "over_budget" and flipping else logging.INFO
            log.log(level, "routing report cleared: conid=%s %s", key[0], key[1])
        self.reports = current

    def _schedule_wake(self) -> None:
        """Reconcile again when the next probe is due or a silent new stream reaches its confirm timeout (a
        probe due now is in this route's limit already: no wake for it, so never a busy loop)."""
        delays = []
        probe_in = self.lines.seconds_to_probe()
        if probe_in and any(r.kind == "over_budget" for r in self.reports.values()):
            delays.append(probe_in)
        now = time.monotonic()
        for conid in self.subs.unconfirmed:
            requested = self.subs.requested_at(conid)
            if requested is not None:
                delays.append(max(0.0, requested + self.confirm_timeout_s - now))
        if self._wake_timer is not None:
            self._wake_timer.cancel()
        if delays:
            self._wake_timer = asyncio.get_running_loop().call_later(min(delays) + 0.01, self.mark_dirty)

    def cancel_wake(self) -> None:
        """Stopping: no more reconciles nor adds."""
        if self._wake_timer is not None:
            self._wake_timer.cancel()
            self._wake_timer = None

    # -- one new stream at a time --------------------------------------------------------------------------
    def _add_pending(self) -> bool:
        """Request the next stream the last plan wanted; True when one was requested. With no line free (the
        pool has not given its lines back yet) it waits: the ledger calls back when one frees up."""
        while self._pending_adds:
            conid = self._pending_adds[0]
            holding = self.account.holding_for(conid)
            demoted = conid in self.verdicts.demoted
            gone = conid in self.subs.desired or conid not in self.legs.conids or demoted
            if gone or holding is None:
                self._pending_adds.pop(0)
                continue
            if not self._start_stream(conid, holding):
                return False
            self._pending_adds.pop(0)
            return True
        return False

    def _start_stream(self, conid: int, holding: Holding) -> bool:
        promoted = self.rotator is not None and conid in self.rotator.contracts
        if self.rotator is not None:
            self.rotator.release(conid)  # promoted from the pool: its rotating line goes first
        if not self.lines.take(STREAM, conid):
            return False
        self.subs.add(conid, stream_contract(holding.contract), connected=True)
        # A probe, or a leg promoted from the pool (it had quotes already), is no news: its routing report
        # says what changed. A leg that starts streaming is.
        quiet = promoted or self.lines.is_probe(STREAM, conid)
        log.log(logging.DEBUG if quiet else logging.INFO, "stream requested: conid=%s %s%s", conid,
                contract_label(holding.contract), " (promoted from the pool)" if promoted else "")
        self.account.add_streamed(conid)
        self._awaiting_confirmation.set()
        return True

    def _advance(self) -> None:
        """After a confirmation: the next planned stream without re-routing every holding (one route per new
        line would be O(lines x holdings) at start-up); when none is left, one full route settles the rest."""
        if self.subs.unconfirmed or not self.account.synced or not self._connected():
            return
        if self._add_pending():
            return
        self.mark_dirty()

    def data_arrived(self, conid: int) -> None:
        """Ticks for `conid`: they confirm its new stream only once IB answered this request (its tick
        parameters). ib_async keeps one Ticker per contract, so late ticks of an earlier request on the same
        contract (a pool line just given up) must not pass for IB's answer: a 101 may still come."""
        if self.subs.answered(conid):
            self.confirmed(conid)

    def confirmed(self, conid: int) -> None:
        """IB holds the line of `conid` (data, tick parameters, a warning, or silence past the timeout); the
        ledger counts it as evidence of a grant."""
        if self.subs.confirm(conid):
            self._advance()

    async def confirm_loop(self, stop: asyncio.Event) -> None:
        """IB accepts a reqMktData with tickReqParams at once (ib_async sets `ticker.minTick`, no event),
        while the first quote may take a while: accepting on it keeps one-at-a-time subscription fast."""
        while not stop.is_set():
            await self._awaiting_confirmation.wait()
            self._awaiting_confirmation.clear()
            while self.subs.unconfirmed and not stop.is_set():
                for conid in self.subs.accepted():
                    self.confirmed(conid)
                await asyncio.sleep(CONFIRM_POLL_S)

    # -- IB's verdicts ---------------------------------------------------------------------------------------
    def refused(self, conid: int) -> None:
        """101: the account is full now (other clients hold the lines), not the contract's fault. The leg
        waits queued at top priority and streams again as soon as a probe finds a free line. The ledger
        logs the cap when it changes (a refused probe is no news)."""
        self.lines.refuse(STREAM, conid)
        self.subs.remove(conid, connected=self._connected())  # no line was held
        log.debug("101 on conid=%s: account full at IB", conid)
        self.mark_dirty()

    def rejected(self, conid: int) -> None:
        """IB refused the contract (200, 354, ...; recorded as a demotion by IB's verdicts): it waits in the
        queue until deactivated."""
        self.subs.remove(conid, connected=self._connected())  # frees ib_async's Ticker; no line was held
        self.mark_dirty()
