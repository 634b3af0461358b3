"""reqHistoricalData: bars of the simulated market, under IB's historical-data pacing rules (error 162).

The simulated market starts with the simulator, so its whole history is one day: a request for daily bars
of an underlying gets one bar, today's — open = the walk's start, high / low = the extremes of the walk,
close = the price now — just as IB answers with fewer bars than the duration asks when a contract has less
history. What the simulator cannot answer it refuses the way IB refuses: a contract it does not know gets
200, a contract without bars (options here) or a period before today "HMDS query returned no data" (162), a
bar size other than "1 day" or a keepUpToDate subscription a 162 naming the limit. cancelHistoricalData
needs no work (every answer is complete at once).

Pacing (IB's "Historical Data Limitations"), gateway-wide as at IB (one login's requests share them):
an identical request within 15 s, six or more requests for the same contract, exchange and data type within
2 s, or more than 60 requests within 10 minutes is refused with 162 "pacing violation" and counted.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from v6_positions.simulator import protocol
from v6_positions.simulator.book import Book, BookContract
from v6_positions.simulator.market import Market
from v6_positions.simulator.protocol import In
from v6_positions.simulator.requests import ContractQuery, FieldReader, resolve_contract
from v6_positions.simulator.session import ClientSession

log = logging.getLogger(__name__)

IDENTICAL_GAP_S = 15.0
SAME_CONTRACT_WINDOW_S = 2.0
SAME_CONTRACT_MAX = 5  # "six or more" within the window is a violation
WINDOW_S = 600.0
WINDOW_MAX = 60
PACING_TEXT = "Historical data request pacing violation"
NO_DATA_TEXT = "HMDS query returned no data"
BAR_SIZE = "1 day"
# Data types with traded volume; the quote-based ones (MIDPOINT, BID, ASK) have none, which IB sends as -1.
TRADED = frozenset({"TRADES", "ADJUSTED_LAST"})
QUOTED = frozenset({"MIDPOINT", "BID", "ASK"})
_DURATION = re.compile(r"^\d+ [SDWMY]$")


@dataclass(slots=True, frozen=True)
class HistoricalRequest:
    req_id: int
    query: ContractQuery
    end: str
    bar_size: str
    duration: str
    use_rth: bool
    what_to_show: str
    format_date: int
    keep_up_to_date: bool

    @classmethod
    def read(cls, fields: list[str]) -> HistoricalRequest:
        """`20, reqId, <12 contract fields>, includeExpired, endDateTime, barSize, duration, useRTH,
        whatToShow, formatDate, [BAG legs], keepUpToDate, chartOptions` (no version field since 124)."""
        r = FieldReader(fields, 1)
        req_id = r.integer()
        query = ContractQuery.read(r)
        r.flag()  # includeExpired
        end, bar_size, duration, use_rth = r.text(), r.text(), r.text(), r.flag()
        what_to_show, format_date = r.text().upper(), r.integer(1)
        if query.sec_type.upper() == "BAG":
            for _ in range(r.integer()):
                r.integer(), r.integer(), r.text(), r.text()
        return cls(req_id, query, end, bar_size, duration, use_rth, what_to_show, format_date, r.flag())

    @property
    def identity(self) -> tuple[object, ...]:
        """What makes two requests identical for IB: everything but the request id."""
        q = self.query
        return (
            q.describe(),
            q.exchange,
            self.end,
            self.bar_size,
            self.duration,
            self.use_rth,
            self.what_to_show,
            self.format_date,
        )

    @property
    def contract_key(self) -> tuple[object, ...]:
        return (self.query.describe(), self.query.exchange, self.what_to_show)


@dataclass(slots=True, eq=False)
class HistoricalData:
    """Answers reqHistoricalData from the market; keeps the gateway's recent requests for pacing."""

    book: Book
    market: Market
    clock: Callable[[], float] = time.monotonic
    requests: int = 0
    served: int = 0
    pacing_violations: int = 0
    _recent: deque[tuple[float, HistoricalRequest]] = field(default_factory=deque)

    def handlers(self) -> dict[int, Any]:
        return {In.REQ_HISTORICAL_DATA: self.req_historical_data, In.CANCEL_HISTORICAL_DATA: self.ignore}

    def ignore(self, session: ClientSession, fields: list[str]) -> None:
        pass

    def req_historical_data(self, session: ClientSession, fields: list[str]) -> None:
        request = HistoricalRequest.read(fields)
        self.requests += 1
        if self._violates_pacing(request):
            self.pacing_violations += 1
            log.warning(
                "client %s: historical request %s refused for pacing", session.client_id, request.identity
            )
            session.send_error(request.req_id, 162, protocol.ERROR_TEXTS[162] + PACING_TEXT)
            return
        self._recent.append((self.clock(), request))
        contract = resolve_contract(self.book.contracts, request.query)
        refusal = self._refusal(request, contract)
        if refusal is not None or contract is None:
            code, text = refusal or (200, protocol.ERROR_TEXTS[200])
            session.send_error(request.req_id, code, text)
            return
        open_, high, low, close = self.market.day_bar(contract.symbol)
        traded = request.what_to_show in TRADED
        volume = 1000 * (self.market.steps + 1) if traded else -1
        bar_count = self.market.steps + 1 if traded else -1
        wap = round((high + low + close) / 3.0, 4)
        now = dt.datetime.now(dt.UTC)
        bar = (
            now.strftime("%Y%m%d"),
            round(open_, 4),
            round(high, 4),
            round(low, 4),
            round(close, 4),
            volume,
            wap,
            bar_count,
        )
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        self.served += 1
        session.send(
            protocol.historical_data(
                request.req_id, start.strftime("%Y%m%d %H:%M:%S"), now.strftime("%Y%m%d %H:%M:%S"), [bar]
            )
        )

    def _refusal(self, request: HistoricalRequest, contract: BookContract | None) -> tuple[int, str] | None:
        if contract is None:
            return 200, f"{protocol.ERROR_TEXTS[200]} ({request.query.describe()})"
        prefix = protocol.ERROR_TEXTS[162]
        if not _DURATION.match(request.duration):
            return 321, f"{protocol.ERROR_TEXTS[321]} Historical duration {request.duration!r} is invalid"
        if request.keep_up_to_date:
            return 162, prefix + "keepUpToDate bar updates are not simulated"
        if request.bar_size != BAR_SIZE:
            return 162, prefix + f"the simulator serves {BAR_SIZE!r} bars only, not {request.bar_size!r}"
        if request.what_to_show not in TRADED | QUOTED:
            return 162, prefix + f"{NO_DATA_TEXT}: whatToShow {request.what_to_show!r} is not simulated"
        if contract.symbol not in self.book.underlyings or contract.sec_type != "STK":
            return 162, prefix + f"{NO_DATA_TEXT}: no bars for {request.query.describe()}"
        if request.end[:8].isdigit() and request.end[:8] < dt.datetime.now(dt.UTC).strftime("%Y%m%d"):
            return 162, prefix + f"{NO_DATA_TEXT}: the simulated market has no history before today"
        return None

    def _violates_pacing(self, request: HistoricalRequest) -> bool:
        now = self.clock()
        recent = self._recent
        while recent and recent[0][0] <= now - WINDOW_S:
            recent.popleft()
        if len(recent) >= WINDOW_MAX:
            return True
        same_contract = 0
        for sent_at, earlier in reversed(recent):
            age = now - sent_at
            if age >= IDENTICAL_GAP_S:
                break
            if earlier.identity == request.identity:
                return True
            if age < SAME_CONTRACT_WINDOW_S and earlier.contract_key == request.contract_key:
                same_contract += 1
        return same_contract >= SAME_CONTRACT_MAX

    def reset(self) -> None:
        self.requests = self.served = self.pacing_violations = 0

    def stats(self) -> dict[str, int]:
        now = self.clock()
        return {
            "historical_requests": self.requests,
            "historical_served": self.served,
            "historical_pacing_violations": self.pacing_violations,
            "historical_in_window": sum(1 for sent_at, _ in self._recent if sent_at > now - WINDOW_S),
        }
