"""LineRotator: applies a RotationScheduler's decisions to an ib_async connection.

It owns the market-data lines of the legs it is given: subscribes and cancels as the scheduler says, tells it
when a leg's quote is usable, turns IB's 101 into "no line held, budget capped at what we hold", and hands
every usable quote to `on_quote(conid, ticker)` (where the streamer writes its row). Each subscribe takes its
line in the stream's line ledger first (`lines/ledger.py`, holder `POOL`; no line free: not sent), each
cancel gives it back, and IB's answers are the ledger's evidence: data confirms the line (a probe won), 101
caps the grant.

A quote is usable when the ticker has a two-sided bid/ask or IB's model price (a one-sided wing) — with the
option's model greeks, or after `greeks_grace_s` without them. ib_async keeps one Ticker per contract across
cancel and resubscribe, values included, so each subscribe clears the ticker's prices first: a rotation is
never satisfied by the quote of its previous visit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ib_async import Contract, Ticker

from v6_positions.config import Settings
from v6_positions.contracts import is_option
from v6_positions.ib.connection.message_codes import MAX_TICKERS, PACING, SUBSCRIPTION_REJECTED
from v6_positions.ib.ib_values import clean_price, price_with_source
from v6_positions.ib.lines.cancel import MarketDataCanceller
from v6_positions.ib.lines.ledger import POOL, LineLedger, standalone_ledger
from v6_positions.ib.periodic import stopped_within
from v6_positions.ib.routing.rotation import (
    Action,
    LegStatus,
    RotationConfig,
    RotationScheduler,
    RotationSummary,
)

log = logging.getLogger(__name__)

QuoteCallback = Callable[[int, Ticker], None]

# Time a Delta commit of streamed rows may take, counted into the rotation's staleness bound.
COMMIT_ALLOWANCE_S = 0.5


@dataclass(slots=True)
class PoolStats:
    """The rotating pool as the stream's status shows it."""

    summary: RotationSummary | None  # None while no leg rotates
    legs: list[LegStatus] = field(default_factory=list)  # per leg: score, role, line, age


class LineRotator:
    def __init__(
        self,
        ib: Any,  # ib_async.IB (typed loosely: tests and benches pass the real one)
        scheduler: RotationScheduler,
        on_quote: QuoteCallback | None = None,
        *,
        generic_ticks: str = "",
        greeks_grace_s: float = 0.5,
        poll_interval_s: float = 0.05,
        enabled: Callable[[], bool] = lambda: True,
        ledger: LineLedger | None = None,
    ) -> None:
        self.ib = ib
        self._canceller = MarketDataCanceller(ib)
        self.scheduler = scheduler
        self.on_quote = on_quote
        self.generic_ticks = generic_ticks
        self.greeks_grace_s = greeks_grace_s
        self.poll_interval_s = poll_interval_s
        self.enabled = enabled  # False while disconnected or not synced: nothing is sent
        # the stream's ledger; a rotator used on its own (tests, benches) keeps one of its own
        self.ledger = ledger if ledger is not None else standalone_ledger()
        self.contracts: dict[int, Contract] = {}
        self.errors: Counter[int] = Counter()  # IB codes seen on our subscriptions
        self._tickers: dict[int, Ticker] = {}
        self._subscribed_at: dict[int, float] = {}  # conid -> monotonic time of its current subscribe
        self._priced_at: dict[int, float] = {}  # conid -> when a price (without greeks) was first seen
        self._wake = asyncio.Event()
        self._stopped = False

    # ---- inputs -----------------------------------------------------------------------------------------
    def set_legs(self, contracts: Mapping[int, Contract], scores: Mapping[int, float]) -> None:
        """The active legs this rotator keeps fresh (conid -> contract with conId and exchange set)."""
        self.contracts = dict(contracts)
        self.scheduler.set_legs({conid: scores.get(conid, 0.0) for conid in contracts})
        self._wake.set()

    def set_budget(self, lines: int) -> None:
        self.scheduler.set_budget(lines)
        self._wake.set()

    def attach(self) -> None:
        self.ib.pendingTickersEvent += self._on_tickers
        self.ib.errorEvent += self._on_error

    def detach(self) -> None:
        self.ib.pendingTickersEvent -= self._on_tickers
        self.ib.errorEvent -= self._on_error

    # ---- the loop ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Poll the scheduler and apply its actions until `stop()`; attach/detach around it."""
        self.attach()
        try:
            while not self._stopped:
                if self.enabled():
                    self.apply(self.scheduler.poll())
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)
                except TimeoutError:
                    pass
        finally:
            self.detach()

    async def run_until(self, stop: asyncio.Event, rerank_s: float, rerank: Callable[[], None]) -> None:
        """`run()` until `stop`; every `rerank_s` while legs rotate, `rerank()` (quotes move the scores: the
        riskiest keep the long-lived lines)."""
        task = asyncio.ensure_future(self.run())
        try:
            while not await stopped_within(stop, rerank_s):
                if self.scheduler.legs:
                    rerank()
        finally:
            self.stop()
            await asyncio.gather(task, return_exceptions=True)

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def lines_held(self) -> int:
        return self.scheduler.lines_held()

    @property
    def configured_lines(self) -> int:
        """The pool's configured size (V6_ROTATION_LINES): the most lines the allocation gives it."""
        return self.scheduler.config.floor_lines

    def stats(self) -> PoolStats:
        scheduler = self.scheduler
        return PoolStats(scheduler.summary() if scheduler.legs else None, scheduler.status())

    def ticker(self, conid: int) -> Ticker | None:
        return self._tickers.get(conid)

    def release(self, conid: int) -> None:
        """Give up `conid` now (its owner streams it on a long-lived line): cancel a held line at once, so
        one contract never has two subscriptions (ib_async keeps one Ticker per contract)."""
        self.contracts.pop(conid, None)
        if self.scheduler.forget(conid):
            self._cancel(conid)
        else:
            self._subscribed_at.pop(conid, None)
            self._tickers.pop(conid, None)
            self.ledger.release(POOL, conid)

    def connection_lost(self) -> None:
        """IB dropped our lines (disconnect, 1101); ib_async dropped or keeps stale tickers: forget both."""
        self.scheduler.lines_lost()
        self._tickers.clear()
        self._subscribed_at.clear()
        self._priced_at.clear()
        self.ledger.release_all(POOL)

    def release_all(self) -> int:
        """Cancel every held line (shutdown while connected). Returns how many."""
        actions = self.scheduler.release_all()
        self.apply(actions)
        return len(actions)

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if action.kind == "subscribe":
                self._subscribe(action.conid)
            else:
                self._cancel(action.conid)

    def _subscribe(self, conid: int) -> None:
        contract = self.contracts.get(conid)
        if contract is None:  # left between poll and apply: nothing to hold
            self.scheduler.on_refused(conid)
            return
        if not self.ledger.take(POOL, conid):  # no line free now (long-lived streams come first)
            self.scheduler.unsent(conid)
            return
        ticker = self.ib.reqMktData(contract, self.generic_ticks, False, False, [])
        _clear_quote(ticker)
        self._tickers[conid] = ticker
        self._subscribed_at[conid] = time.monotonic()
        self._priced_at.pop(conid, None)

    def _cancel(self, conid: int) -> None:
        self._subscribed_at.pop(conid, None)
        self._priced_at.pop(conid, None)
        ticker = self._tickers.pop(conid, None)
        if ticker is not None:
            self._canceller.cancel(ticker.contract, ticker)
        self.ledger.release(POOL, conid)

    # ---- IB's answers -----------------------------------------------------------------------------------
    def _on_tickers(self, tickers: set[Ticker]) -> None:
        woke = False
        for ticker in tickers:
            conid = ticker.contract.conId if ticker.contract else 0
            if conid not in self._subscribed_at or self._tickers.get(conid) is not ticker:
                continue
            if _accepted(ticker):  # IB answered this request (not a late tick of an earlier one)
                self.ledger.confirm(POOL, conid)  # the line is held: evidence of a grant
            if self._usable(conid, ticker):
                if self.on_quote is not None:
                    self.on_quote(conid, ticker)
                self.scheduler.on_quote(conid)
                woke = True
        if woke:
            self._wake.set()  # a rotating line is free: give it to the next leg now, not at the next poll

    def _usable(self, conid: int, ticker: Ticker) -> bool:
        model = ticker.modelGreeks
        _, source = price_with_source(
            clean_price(ticker.bid),
            clean_price(ticker.ask),
            None,
            None,
            clean_price(model.optPrice) if model is not None else None,
        )
        if source is None:
            return False
        if model is not None or not is_option(ticker.contract.secType):
            return True
        first = self._priced_at.setdefault(conid, time.monotonic())
        return time.monotonic() - first >= self.greeks_grace_s

    def _on_error(self, req_id: int, code: int, message: str, contract: Contract | None) -> None:
        conid = contract.conId if contract is not None else 0
        if code in PACING:
            self.errors[code] += 1
            log.warning("IB says we exceed its message rate (100): %s", message)
            return
        if conid not in self._subscribed_at:
            return
        if code in MAX_TICKERS or code in SUBSCRIPTION_REJECTED:
            self.errors[code] += 1
            self._subscribed_at.pop(conid, None)
            ticker = self._tickers.pop(conid, None)
            if ticker is not None:  # IB holds no line: forget the reqId without a cancel message to IB
                self.ib.wrapper.endTicker(ticker, "mktData")
            self.scheduler.on_refused(conid)
            if code in MAX_TICKERS:  # the account is full now: hold what we have, no more
                self.scheduler.set_budget(self.scheduler.lines_held())
                self.ledger.refuse(POOL, conid)
                log.debug("101 on pool conid=%s: account full at IB", conid)
            else:
                self.ledger.release(POOL, conid)
            self._wake.set()


def stream_rotator(
    ib: Any,
    settings: Settings,
    on_quote: QuoteCallback,
    *,
    generic_ticks: str = "",
    enabled: Callable[[], bool] = lambda: True,
    ledger: LineLedger | None = None,
) -> LineRotator | None:
    """The stream's rotating pool of `V6_ROTATION_LINES` lines; None when it is off (0)."""
    if settings.rotation_lines <= 0:
        return None
    config = RotationConfig(
        floor_lines=settings.rotation_lines,
        # a quote's row is committed within a flush interval plus the commit itself
        flush_interval_s=settings.flush_interval_s + COMMIT_ALLOWANCE_S,
    )
    return LineRotator(
        ib, RotationScheduler(config, time.monotonic), on_quote,
        generic_ticks=generic_ticks, enabled=enabled, ledger=ledger,
    )


def _accepted(ticker: Ticker) -> bool:
    return ticker.minTick is not None and not math.isnan(ticker.minTick)


def _clear_quote(ticker: Ticker) -> None:
    """Forget the previous visit's quote (ib_async reuses the Ticker of a contract)."""
    nan = math.nan
    ticker.minTick = nan  # set again by IB's tickReqParams: the answer to this request
    ticker.bid = ticker.ask = ticker.last = nan
    ticker.bidSize = ticker.askSize = ticker.lastSize = nan
    ticker.modelGreeks = ticker.bidGreeks = ticker.askGreeks = ticker.lastGreeks = None
