"""An underlying's latest price at zero lines: one daily bar from reqHistoricalData, paced within IB's rules.

Used for underlyings the book has no other price for (no streamed leg carrying IB's underlying price, no held
stock). A daily bar of "1 D" is one bar whose close is the latest trade (the previous session's close outside
trading hours); a historical request uses no market-data line.

IB's historical-data pacing ("Historical Data Limitations" in the TWS API docs): no identical request within
15 s; no six or more requests for the same contract, exchange and data type within 2 s; no more than 60
requests within any 10 minutes. A violation is answered with error 162 and repeated ones can disconnect the
client. `HistoricalPacer` decides, with an injected clock, how long the next request must wait; the gateway's
budget is shared by every client of the login, so a pacer keeps a margin and never uses more than its share.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace

from ib_async import IB, Contract, Stock

from v6_positions.config import Settings
from v6_positions.ib.connection.client_ids import HELPER_ID_COUNT, helper_id_range
from v6_positions.ib.connection.session import BATCH_FETCH, IBSession, SessionConfig
from v6_positions.ib.ib_values import clean_price

log = logging.getLogger(__name__)

IDENTICAL_GAP_S = 15.0
SAME_CONTRACT_WINDOW_S = 2.0
SAME_CONTRACT_MAX = 5  # IB: "six or more" within the window violates
WINDOW_S = 600.0
WINDOW_MAX = 60
MARGIN_S = 1.0  # IB measures on its own clock; waiting a little longer than the rule costs nothing
ANSWER_TIMEOUT_S = 10.0


@dataclass(slots=True, frozen=True)
class BarRequest:
    """One daily bar of a stock-like underlying; `key` is what IB compares for "identical"."""

    symbol: str
    sec_type: str = "STK"
    exchange: str = "SMART"
    currency: str = "USD"
    duration: str = "1 D"
    bar_size: str = "1 day"
    what_to_show: str = "TRADES"
    use_rth: bool = True

    @property
    def key(self) -> tuple[object, ...]:
        return (
            self.symbol,
            self.sec_type,
            self.exchange,
            self.currency,
            self.duration,
            self.bar_size,
            self.what_to_show,
            self.use_rth,
        )

    @property
    def contract_key(self) -> tuple[object, ...]:
        return (self.symbol, self.sec_type, self.exchange, self.currency, self.what_to_show)

    def contract(self) -> Contract:
        if self.sec_type == "STK":
            return Stock(self.symbol, self.exchange, self.currency)
        return Contract(
            symbol=self.symbol, secType=self.sec_type, exchange=self.exchange, currency=self.currency
        )


@dataclass(slots=True)
class HistoricalPacer:
    """How long a historical request must wait to stay within IB's pacing; `record` each request sent.

    `window_max` below IB's 60 leaves room for other clients of the same login (IB counts them together)."""

    window_max: int = WINDOW_MAX
    window_s: float = WINDOW_S
    identical_gap_s: float = IDENTICAL_GAP_S
    same_contract_max: int = SAME_CONTRACT_MAX
    same_contract_window_s: float = SAME_CONTRACT_WINDOW_S
    margin_s: float = MARGIN_S
    clock: Callable[[], float] = time.monotonic
    _sent: deque[tuple[float, BarRequest]] = field(default_factory=deque)
    most_in_window: int = 0  # the most requests any `window_s` held: the figure IB's rule limits

    def __post_init__(self) -> None:
        if not 1 <= self.window_max <= WINDOW_MAX:
            raise ValueError(f"window_max={self.window_max}: must be between 1 and IB's {WINDOW_MAX}")

    def delay(self, request: BarRequest) -> float:
        """Seconds from now until `request` may go out (0.0 = at once)."""
        now = self.clock()
        self._forget(now)
        ready = now
        if len(self._sent) >= self.window_max:
            oldest_to_expire = self._sent[len(self._sent) - self.window_max][0]
            ready = max(ready, oldest_to_expire + self.window_s + self.margin_s)
        same_contract = [t for t, r in self._sent if r.contract_key == request.contract_key]
        if len(same_contract) >= self.same_contract_max:
            ready = max(
                ready, same_contract[-self.same_contract_max] + self.same_contract_window_s + self.margin_s
            )
        identical = [t for t, r in self._sent if r.key == request.key]
        if identical:
            ready = max(ready, identical[-1] + self.identical_gap_s + self.margin_s)
        return ready - now

    def record(self, request: BarRequest) -> None:
        now = self.clock()
        self._forget(now)
        self._sent.append((now, request))
        self.most_in_window = max(self.most_in_window, len(self._sent))

    def history(self) -> list[tuple[float, BarRequest]]:
        """The requests of the current window with their clock times: what a later process needs (with
        `restore`, on the same clock, e.g. time.time) to keep pacing across runs."""
        self._forget(self.clock())
        return list(self._sent)

    def restore(self, history: Iterable[tuple[float, BarRequest]]) -> None:
        self._sent = deque(sorted(history, key=lambda item: item[0]))
        self._forget(self.clock())

    def _forget(self, now: float) -> None:
        # Keep a whole window: the 60-per-10-minutes rule needs it, and it covers the shorter rules.
        while self._sent and self._sent[0][0] <= now - self.window_s:
            self._sent.popleft()


@dataclass(slots=True)
class HistoricalStats:
    requested: int = 0
    answered: int = 0
    missing: int = 0  # no bar, an error or a timeout: logged and counted, never a made-up price
    deferred: int = 0  # not sent: the pacer asked for a longer wait than the caller allows
    waited_s: float = 0.0  # time spent waiting for the pacer
    errors: dict[int, int] = field(default_factory=dict)  # IB error code -> times


class UnderlyingCloses:
    """Latest closes of underlyings, one paced reqHistoricalData per underlying, one at a time."""

    def __init__(
        self,
        ib: IB,
        pacer: HistoricalPacer | None = None,
        *,
        timeout_s: float = ANSWER_TIMEOUT_S,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.ib = ib
        self.pacer = pacer or HistoricalPacer()
        self.timeout_s = timeout_s
        self.sleep = sleep
        self.stats = HistoricalStats()

    async def fetch(
        self, requests: Iterable[BarRequest | str], *, max_wait_s: float | None = None
    ) -> dict[str, float]:
        """symbol -> the latest bar's close, for the underlyings IB answered with a usable price. With
        `max_wait_s`, a request the pacer would hold longer is not sent (counted as deferred): a caller on a
        schedule asks again next time rather than blocking."""
        closes: dict[str, float] = {}
        for item in requests:
            request = BarRequest(item) if isinstance(item, str) else item
            if max_wait_s is not None and self.pacer.delay(request) > max_wait_s:
                self.stats.deferred += 1
                continue
            price = await self.fetch_one(request)
            if price is not None:
                closes[request.symbol] = price
        return closes

    async def fetch_one(self, request: BarRequest) -> float | None:
        wait = self.pacer.delay(request)
        if wait > 0:
            self.stats.waited_s += wait
            await self.sleep(wait)
        self.pacer.record(request)
        self.stats.requested += 1
        errors: list[int] = []

        def on_error(req_id: int, code: int, message: str, contract: Contract | None) -> None:
            if contract is not None and contract.symbol == request.symbol:
                errors.append(code)

        self.ib.errorEvent += on_error
        try:
            bars = await self.ib.reqHistoricalDataAsync(
                request.contract(),
                "",
                request.duration,
                request.bar_size,
                request.what_to_show,
                request.use_rth,
                timeout=self.timeout_s,
            )
        finally:
            self.ib.errorEvent -= on_error
        for code in errors:
            self.stats.errors[code] = self.stats.errors.get(code, 0) + 1
        price = clean_price(bars[-1].close) if bars else None
        if price is None or price == 0 or not math.isfinite(price):
            self.stats.missing += 1
            log.warning("no historical close for %s (errors %s)", request.symbol, errors or "none")
            return None
        self.stats.answered += 1
        return price


def fetch_closes_zero_line(
    settings: Settings,
    client_id: int,
    requests: Iterable[BarRequest | str],
    pacer: HistoricalPacer,
    *,
    max_wait_s: float | None = 0.0,
) -> tuple[dict[str, float], HistoricalStats]:
    """Synchronous (Dagster ops call this): connect a read-only helper client (`client_id` and the helper
    ids after it, never the stream's), fetch the closes paced by `pacer`, disconnect."""
    return asyncio.run(
        fetch_closes_zero_line_async(settings, client_id, requests, pacer, max_wait_s=max_wait_s)
    )


async def fetch_closes_zero_line_async(
    settings: Settings,
    client_id: int,
    requests: Iterable[BarRequest | str],
    pacer: HistoricalPacer,
    *,
    max_wait_s: float | None = 0.0,
) -> tuple[dict[str, float], HistoricalStats]:
    first, count = helper_id_range(settings, client_id)
    count = min(count, settings.ib_client_id + HELPER_ID_COUNT + 1 - first)  # within this deployment's ids
    config = replace(SessionConfig.from_settings(settings), client_id=first, client_id_count=count)
    session = IBSession(config, IB(), fetch=BATCH_FETCH)
    await session.connect()
    try:
        fetcher = UnderlyingCloses(session.ib, pacer)
        closes = await fetcher.fetch(requests, max_wait_s=max_wait_s)
        log.info(
            "historical closes: %d of %d asked answered, %d deferred by pacing",
            fetcher.stats.answered, fetcher.stats.requested, fetcher.stats.deferred,
        )  # fmt: skip
        return closes, fetcher.stats
    finally:
        await session.close()
