"""IB's verdicts on the stream's own market-data requests, and the state they leave behind: which legs IB
refused (200/354: demoted to the queue until deactivated), which streams lack part of their data
(10090/10091) and whether another login of the user takes the data (10197).

`judge()` turns one IB error into a verdict on who holds the line now (refused, held, rejected); the
streamer hands that verdict to the line allocation, which reads the demotions here when it routes.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from ib_async import Contract

from v6_positions.ib.connection.message_codes import (
    COMPETING_SESSION,
    MAX_TICKERS,
    PARTIAL_MARKET_DATA,
    SUBSCRIPTION_REJECTED,
    describe,
)
from v6_positions.ib.lines.subscriptions import SubscriptionRegistry

log = logging.getLogger(__name__)

_WATCHED = SUBSCRIPTION_REJECTED | MAX_TICKERS | PARTIAL_MARKET_DATA | COMPETING_SESSION


class Verdict(enum.Enum):
    REFUSED = "refused"  # 101: the account is full now, no line is held (not the contract's fault)
    HELD = "held"  # IB holds the line (partial data, a competing session): the stream stays
    REJECTED = "rejected"  # 200/354...: IB refuses the contract; demoted to the queue until deactivated


@dataclass(slots=True, frozen=True)
class StreamVerdict:
    conid: int
    kind: Verdict


@dataclass(slots=True)
class StreamErrorStats:
    """IB's verdicts as the stream's status shows them."""

    demoted: dict[int, str]  # conid -> IB's reason (200/354); a 101 never demotes
    partial_data: dict[int, str]  # 10090/10091 warnings per streamed conid
    competing_session: bool  # 10197: another login of this user takes the market data


class StreamErrors:
    def __init__(self, subs: SubscriptionRegistry) -> None:
        self.subs = subs
        self.demoted: dict[int, str] = {}  # conid -> IB's reason (200/354): queued until deactivated
        self.partial_data: dict[int, str] = {}  # 10090/10091 warnings per streamed conid
        self.competing_session = False  # 10197: another login of this user takes the market data
        self._ticks_count = True  # False from a 10197 until the socket read that carried it is processed

    def judge(
        self, req_id: int, code: int, message: str, contract: Contract | None = None
    ) -> StreamVerdict | None:
        """One of ib_async's errorEvents: the verdict on one of our streams, None for anything else."""
        if code not in _WATCHED:
            return None
        conid = self.subs.conid_for_req_id(req_id)  # the reqId names the request; a contract may be re-used
        if conid is None:
            conid = int(contract.conId) if contract is not None and contract.conId else None
        if conid is None or conid not in self.subs.desired:
            return None  # not one of our streams (e.g. a contract details request)
        reason = f"{describe(code)} ({code}): {message}"
        if code in MAX_TICKERS:
            return StreamVerdict(conid, Verdict.REFUSED)
        if code in PARTIAL_MARKET_DATA:
            if conid not in self.partial_data:
                log.warning("conid=%s streams with part of its data missing: %s", conid, reason)
            self.partial_data[conid] = reason
            return StreamVerdict(conid, Verdict.HELD)  # the line is held; the rest of the data streams
        if code in COMPETING_SESSION:
            if not self.competing_session:
                log.warning("no market data: %s (another login of this user is live; streams resume "
                            "after it)", reason)
            self.competing_session = True
            # ib_async announces the ticks of one socket read after its errors: ticks that came in the same
            # read as the 10197 were sent before it and must not end the competing session at once.
            self._ticks_count = False
            asyncio.get_running_loop().call_soon(self._count_ticks)
            return StreamVerdict(conid, Verdict.HELD)  # IB holds the line during the competing session
        self.demoted[conid] = reason
        log.warning("stream rejected by IB, demoted to the queue: conid=%s %s", conid, reason)
        return StreamVerdict(conid, Verdict.REJECTED)

    def _count_ticks(self) -> None:
        self._ticks_count = True

    def data_flowing(self) -> None:
        """A tick of one of our streams arrived."""
        if self.competing_session and self._ticks_count:
            log.info("market data flowing again after a competing live session")
            self.competing_session = False

    def stream_cancelled(self, conid: int) -> None:
        """The allocation cancelled `conid`'s stream: its data-quality warning goes with it."""
        self.partial_data.pop(conid, None)

    def deactivated(self, conids: Iterable[int]) -> None:
        """Legs left the registry's active set: a demotion lasts only while its leg is active."""
        for conid in conids:
            if self.demoted.pop(conid, None) is not None:
                log.info("conid=%s no longer active: demotion cleared", conid)

    def stats(self) -> StreamErrorStats:
        return StreamErrorStats(dict(self.demoted), dict(self.partial_data), self.competing_session)
