"""The set of market-data streams this process wants, and what is live right now.

Each subscription keeps a re-callable subscribe handle, so after a reconnect (ib_async's `disconnect()` drops
every Ticker) or a 1101 (IB dropped the data, the socket stayed) `replay()` requests exactly the desired set:
no duplicates, no leftovers. Each request takes its line in the stream's line ledger first
(`lines/ledger.py`, holder `STREAM`) and each cancel, refusal or lost connection gives it back there.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ib_async import Contract, Ticker

from v6_positions.ib.lines.cancel import MarketDataCanceller
from v6_positions.ib.lines.ledger import STREAM, LineLedger, standalone_ledger

log = logging.getLogger(__name__)


class MarketDataApi(Protocol):
    """The two ib_async `IB` methods this module needs (a fake in unit tests)."""

    def reqMktData(  # noqa: N802 - ib_async's name
        self,
        contract: Contract,
        genericTickList: str = "",  # noqa: N803
        snapshot: bool = False,
        regulatorySnapshot: bool = False,  # noqa: N803
        mktDataOptions: Any = None,  # noqa: N803
    ) -> Ticker: ...

    def cancelMktData(self, contract: Contract) -> bool: ...  # noqa: N802


@dataclass(slots=True)
class Subscription:
    conid: int
    contract: Contract
    subscribe: Callable[[], Ticker]  # re-callable: each call is one fresh reqMktData
    ticker: Ticker | None = None
    req_id: int | None = None
    confirmed: bool = False  # IB answered with data: the line is held (a 101 can no longer come)
    requested_at: float = 0.0

    @property
    def live(self) -> bool:
        return self.ticker is not None


class SubscriptionRegistry:
    def __init__(self, api: MarketDataApi, generic_ticks: str = "", ledger: LineLedger | None = None) -> None:
        self._api = api
        self._canceller = MarketDataCanceller(api)
        self._generic_ticks = generic_ticks
        self._ledger = ledger if ledger is not None else standalone_ledger()
        self._subs: dict[int, Subscription] = {}

    # -- queries -------------------------------------------------------------------------------------------
    @property
    def desired(self) -> set[int]:
        return set(self._subs)

    @property
    def live(self) -> set[int]:
        return {conid for conid, sub in self._subs.items() if sub.live}

    @property
    def lines_in_use(self) -> int:
        return sum(1 for sub in self._subs.values() if sub.live)

    @property
    def unconfirmed(self) -> set[int]:
        """Requested, but IB has not answered with data (nor 101) yet."""
        return {conid for conid, sub in self._subs.items() if sub.live and not sub.confirmed}

    def confirm(self, conid: int) -> bool:
        """IB sent data for `conid`: True the first time since it was requested."""
        sub = self._subs.get(conid)
        if sub is None or not sub.live or sub.confirmed:
            return False
        sub.confirmed = True
        self._ledger.confirm(STREAM, conid)
        return True

    def answered(self, conid: int) -> bool:
        """`conid`'s unconfirmed stream has IB's answer to this request (its tick parameters)."""
        sub = self._subs.get(conid)
        return sub is not None and sub.live and not sub.confirmed and _accepted(sub.ticker)

    def accepted(self) -> list[int]:
        """Unconfirmed streams IB has answered with its tick parameters or data: their lines are held."""
        return [conid for conid in self.unconfirmed if _accepted(self._subs[conid].ticker)]

    def overdue(self, timeout_s: float) -> list[int]:
        """Unconfirmed streams silent for `timeout_s` since requested (IB's 101 would have come at once)."""
        now = time.monotonic()
        return [conid for conid in self.unconfirmed if now - self._subs[conid].requested_at >= timeout_s]

    def ticker(self, conid: int) -> Ticker | None:
        sub = self._subs.get(conid)
        return sub.ticker if sub is not None else None

    def requested_at(self, conid: int) -> float | None:
        sub = self._subs.get(conid)
        return sub.requested_at if sub is not None and sub.live else None

    def is_live(self, conid: int) -> bool:
        sub = self._subs.get(conid)
        return sub is not None and sub.live

    def contract(self, conid: int) -> Contract | None:
        sub = self._subs.get(conid)
        return sub.contract if sub else None

    def conid_for_req_id(self, req_id: int) -> int | None:
        for sub in self._subs.values():
            if sub.req_id == req_id:
                return sub.conid
        return None

    # -- changes -------------------------------------------------------------------------------------------
    def add(self, conid: int, contract: Contract, *, connected: bool = True) -> bool:
        """Want a stream for `conid`; request it now when connected and the ledger has a line for it (else
        `replay()` requests it later). False if it was already wanted."""
        if conid in self._subs:
            return False
        api, ticks = self._api, self._generic_ticks

        def subscribe() -> Ticker:
            # Keyword arguments: a positional "" would land in `snapshot` (reqMktData's argument order).
            return api.reqMktData(
                contract, genericTickList=ticks, snapshot=False, regulatorySnapshot=False, mktDataOptions=[]
            )

        sub = Subscription(conid=conid, contract=contract, subscribe=subscribe)
        self._subs[conid] = sub
        if connected:
            self._request(sub)
        return True

    def remove(self, conid: int, *, connected: bool = True) -> bool:
        """Stop wanting `conid`; cancel its stream if live. False if it was not wanted."""
        sub = self._subs.pop(conid, None)
        if sub is None:
            return False
        if sub.live and connected:
            self._cancel(sub)
        self._ledger.release(STREAM, conid)
        return True

    def connection_lost(self) -> None:
        """The socket dropped: ib_async cleared every Ticker, IB freed every line. Desired set stays."""
        for sub in self._subs.values():
            sub.ticker = None
            sub.req_id = None
            sub.confirmed = False
        self._ledger.release_all(STREAM)

    def replay(self, *, renew_live: bool = False) -> int:
        """Request every desired stream that is not live; with `renew_live` (after 1101) also cancel and
        re-request the live ones, because IB dropped them while ib_async still holds their Tickers."""
        count = 0
        for sub in list(self._subs.values()):
            if sub.live:
                if not renew_live:
                    continue
                self._cancel(sub)
            count += self._request(sub)
        return count

    async def clear_paced(self, per_second: int, *, connected: bool = True, sent: int = 0) -> int:
        """Cancel every stream (stop), at most `per_second` cancels a second (`sent`: messages already sent in
        this second): a stop of 100 streams must stay under IB's 50 messages a second, not lean on
        ib_async's throttle. Returns how many were cancelled."""
        count = 0
        budget = max(0, per_second - sent)
        for conid in list(self._subs):
            sub = self._subs.pop(conid)
            if sub.live and connected:
                if budget == 0:
                    await asyncio.sleep(1.0)
                    budget = per_second
                self._cancel(sub)
                budget -= 1
                count += 1
        self._ledger.release_all(STREAM)
        return count

    def clear(self, *, connected: bool = True) -> int:
        """Cancel every stream (stop)."""
        count = 0
        for conid in list(self._subs):
            sub = self._subs[conid]
            if sub.live and connected:
                self._cancel(sub)
                count += 1
            del self._subs[conid]
        self._ledger.release_all(STREAM)
        return count

    # -- wire ----------------------------------------------------------------------------------------------
    def _request(self, sub: Subscription) -> bool:
        """Request the stream if the ledger has a line for it; True when requested."""
        if not self._ledger.take(STREAM, sub.conid):
            return False
        sub.ticker = sub.subscribe()
        # ib_async keeps one Ticker per contract across cancel and resubscribe: forget the previous request's
        # acceptance, or a leg streamed before would look accepted before IB answered (a 101 may follow).
        sub.ticker.minTick = math.nan
        sub.ticker.time = None
        sub.req_id = self._canceller.request_of(sub.ticker)  # errors (101) name the reqId
        sub.confirmed = False
        sub.requested_at = time.monotonic()
        log.debug("reqMktData conid=%s reqId=%s", sub.conid, sub.req_id)
        return True

    def _cancel(self, sub: Subscription) -> None:
        try:
            self._canceller.cancel(sub.contract, sub.ticker)
        except Exception:  # a cancel that fails must not keep the registry inconsistent
            log.exception("cancelMktData failed for conid=%s", sub.conid)
        sub.ticker = None
        sub.req_id = None
        sub.confirmed = False
        self._ledger.release(STREAM, sub.conid)


def _accepted(ticker: Ticker | None) -> bool:
    """IB accepts a reqMktData with tickReqParams at once (ib_async sets `ticker.minTick`, no event)."""
    if ticker is None:
        return False
    min_tick = ticker.minTick
    return (min_tick is not None and not math.isnan(min_tick)) or ticker.time is not None


def stream_contract(contract: Contract) -> Contract:
    """The contract to request data for: a copy, routed SMART when the position came without an exchange."""
    requested = copy.copy(contract)
    if not requested.exchange:
        requested.exchange = "SMART"
    return requested


def contract_label(contract: Contract) -> str:
    """A contract in a log line: symbol, sec type, expiry, strike and right, blanks left out."""
    c = contract
    parts = (c.symbol, c.secType, c.lastTradeDateOrContractMonth, c.strike, c.right)
    return " ".join(str(v) for v in parts if v)
