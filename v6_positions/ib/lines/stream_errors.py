"""IB's verdicts on the stream's own market-data requests, and the data-quality state they leave behind:
which streams lack part of their data (10090/10091) and whether another login of the user takes the data
(10197). Verdicts that change who holds a line go to the allocation: 101 (the account is full now) and
200/354 (IB refuses the contract: demoted to the queue)."""

from __future__ import annotations

import asyncio
import logging

from ib_async import Contract

from v6_positions.ib.connection.message_codes import (
    COMPETING_SESSION,
    MAX_TICKERS,
    PARTIAL_MARKET_DATA,
    SUBSCRIPTION_REJECTED,
    describe,
)
from v6_positions.ib.lines.allocation import LineAllocation
from v6_positions.ib.lines.subscriptions import SubscriptionRegistry

log = logging.getLogger(__name__)

_WATCHED = SUBSCRIPTION_REJECTED | MAX_TICKERS | PARTIAL_MARKET_DATA | COMPETING_SESSION


class StreamErrors:
    def __init__(self, subs: SubscriptionRegistry, allocation: LineAllocation) -> None:
        self.subs = subs
        self.allocation = allocation
        self.partial_data: dict[int, str] = {}  # 10090/10091 warnings per streamed conid
        self.competing_session = False  # 10197: another login of this user takes the market data
        self._ticks_count = True  # False from a 10197 until the socket read that carried it is processed

    def on_error(self, req_id: int, code: int, message: str, contract: Contract | None = None) -> None:
        """ib_async's errorEvent: acts on the codes above for our own streams, ignores everything else."""
        if code not in _WATCHED:
            return
        conid = self.subs.conid_for_req_id(req_id)  # the reqId names the request; a contract may be re-used
        if conid is None:
            conid = int(contract.conId) if contract is not None and contract.conId else None
        if conid is None or conid not in self.subs.desired:
            return  # not one of our streams (e.g. a contract details request)
        reason = f"{describe(code)} ({code}): {message}"
        if code in MAX_TICKERS:
            self.allocation.refused(conid)
        elif code in PARTIAL_MARKET_DATA:
            if conid not in self.partial_data:
                log.warning("conid=%s streams with part of its data missing: %s", conid, reason)
            self.partial_data[conid] = reason
            self.allocation.confirmed(conid)  # the line is held; the rest of the data streams
        elif code in COMPETING_SESSION:
            if not self.competing_session:
                log.warning("no market data: %s (another login of this user is live; streams resume "
                            "after it)", reason)
            self.competing_session = True
            # ib_async announces the ticks of one socket read after its errors: ticks that came in the same
            # read as the 10197 were sent before it and must not end the competing session at once.
            self._ticks_count = False
            asyncio.get_running_loop().call_soon(self._count_ticks)
            self.allocation.confirmed(conid)  # IB holds the line during the competing session
        else:
            self.allocation.demote(conid, reason)

    def _count_ticks(self) -> None:
        self._ticks_count = True

    def data_flowing(self) -> None:
        """A tick of one of our streams arrived."""
        if self.competing_session and self._ticks_count:
            log.info("market data flowing again after a competing live session")
            self.competing_session = False

    def stream_cancelled(self, conid: int) -> None:
        self.partial_data.pop(conid, None)
