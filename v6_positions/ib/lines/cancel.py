"""Cancelling a market-data request so that nothing IB still sends for it reaches the next request.

ib_async keeps one Ticker per contract and never forgets which Ticker a reqId fed (`Wrapper.reqId2Ticker`):
the ticks, and the tick parameters, IB sends for a cancelled request until it reads the cancel land on the
Ticker of the next request for the same contract. A leg moves between the pool and a long-lived line with a
cancel and a new request on one contract, so those late messages would pass for IB's answer to the new
request: a probe IB is about to refuse would count as won, and the ledger would believe in a line IB never
granted. A cancelled request's reqId is pointed at a Ticker of its own that nobody reads (its contract is
None, which every ticker handler skips).
"""

from __future__ import annotations

import logging
from typing import Any

from ib_async import Contract, Ticker

log = logging.getLogger(__name__)

_MARKET_DATA = "mktData"  # ib_async's tick type key for reqMktData tickers


class MarketDataCanceller:
    def __init__(self, api: Any) -> None:
        """`api`: ib_async's `IB` (or a fake without a `wrapper`: then only the cancel is sent)."""
        self._api = api
        self._retired = Ticker()  # late messages of cancelled requests land here, unread

    def cancel(self, contract: Contract, ticker: Ticker | None) -> None:
        """cancelMktData for `contract`, whose current request feeds `ticker`; its reqId is retired."""
        req_id = self.request_of(ticker)
        self._api.cancelMktData(contract)
        if req_id is not None:
            self._api.wrapper.reqId2Ticker[req_id] = self._retired

    def request_of(self, ticker: Ticker | None) -> int | None:
        """The reqId of `ticker`'s current market-data request, None when there is none (or no wrapper)."""
        wrapper = getattr(self._api, "wrapper", None)
        if wrapper is None or ticker is None:
            return None
        try:
            return wrapper.ticker2ReqId[_MARKET_DATA].get(ticker)
        except (AttributeError, KeyError, TypeError):
            log.debug("ib_async keeps no reqId map for market data: late ticks are not retired")
            return None
