"""Market-data subscriptions: reqMktData / cancelMktData, first quotes after IB's latency, snapshots, and
the ticks every open stream gets each cycle; plus the feed's own states (farms down, a competing session).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import InitVar, dataclass, field
from typing import Any

from v6_positions.simulator import protocol
from v6_positions.simulator.book import Book
from v6_positions.simulator.clients import ClientRegistry
from v6_positions.simulator.lines import LineCount
from v6_positions.simulator.market import Market
from v6_positions.simulator.protocol import In
from v6_positions.simulator.requests import ContractQuery, FieldReader, resolve_contract
from v6_positions.simulator.session import ClientSession, Subscription
from v6_positions.simulator.stats import SimStats
from v6_positions.simulator.ticks import tick_messages

log = logging.getLogger(__name__)

# IB's first ticks arrive ~100-300 ms after reqMktData (the farm looks the contract up and snapshots it):
# the `simulate` command's default. The class defaults to at-once quotes, which older tests were written for.
QUOTE_LATENCY = (0.1, 0.3)
NO_LATENCY = (0.0, 0.0)


@dataclass(slots=True, eq=False)
class MarketDataFeed:
    """Owns the quote latency and the feed's states; each session owns its subscriptions (`session.mkt`)."""

    book: Book
    market: Market
    clients: ClientRegistry
    lines: LineCount
    counters: SimStats
    snapshot_delay: float = 0.2
    quote_latency: tuple[float, float] = NO_LATENCY
    seed: InitVar[int] = 0
    feed_down: bool = False  # between 1100 and 1101/1102: no ticks, as when IB's farms are unreachable
    competing_session: bool = False  # 10197: another live session took the market data
    # IB streams while the client's cancel is on the wire: ticks it sent before it read the cancel reach the
    # client after the client cancelled (one cycle of them, sent right before the cancel is applied)
    ticks_in_flight_at_cancel: bool = True
    _latency_rng: random.Random = field(init=False)

    def __post_init__(self, seed: int) -> None:
        self.quote_latency = check_latency(*self.quote_latency)
        self._latency_rng = random.Random(f"{seed}:quote-latency")

    def handlers(self) -> dict[int, Any]:
        return {In.REQ_MKT_DATA: self.req_mkt_data, In.CANCEL_MKT_DATA: self.cancel_mkt_data}

    # ---- requests -----------------------------------------------------------------------------------------
    def req_mkt_data(self, session: ClientSession, fields: list[str]) -> None:
        r = FieldReader(fields, 2)
        req_id = r.integer()
        query = ContractQuery.read(r)
        if query.sec_type.upper() == "BAG":
            for _ in range(r.integer()):
                r.integer(), r.integer(), r.text(), r.text()
        if r.flag():  # delta-neutral contract
            r.integer(), r.number(), r.number()
        _generic_ticks, snapshot, regulatory = r.text(), r.flag(), r.flag()
        self.subscribe(session, req_id, query, snapshot or regulatory)

    def cancel_mkt_data(self, session: ClientSession, fields: list[str]) -> None:
        req_id = FieldReader(fields, 2).integer()
        sub = session.mkt.get(req_id)
        in_flight = self.ticks_in_flight_at_cancel and self.streaming
        if in_flight and sub is not None and sub.quoting and not sub.snapshot:  # a snapshot's ticks came once
            quote = self.market.quote(sub.contract)
            messages = tick_messages(req_id, quote, self.book.quirks.get(sub.contract.conid), False)
            session.send_many(messages, ticks=len(messages))
        if session.mkt.pop(req_id, None) is not None:
            self.counters.cancel_count += 1
        else:
            log.info("client %s cancelled unknown market data reqId %d", session.client_id, req_id)

    def subscribe(self, session: ClientSession, req_id: int, query: ContractQuery, snapshot: bool) -> None:
        if req_id in session.mkt:
            # IB: 322 duplicate ticker id; the existing subscription stays as it is.
            session.send_error(req_id, 322)
            return
        contract = resolve_contract(self.book.contracts, query)
        if contract is None:
            session.send_error(req_id, 200, f"{protocol.ERROR_TEXTS[200]} ({query.describe()})")
            return
        if self.lines.full():
            session.send_error(req_id, 101)
            return
        sub = Subscription(req_id, contract, snapshot)
        session.mkt[req_id] = sub
        self.counters.subscribe_count += 1
        self.counters.snapshot_count += snapshot
        self.lines.note_peak()
        session.send(protocol.market_data_type(req_id, 1))
        quirks = self.book.quirks.get(contract.conid)
        if quirks is not None and quirks.data_warning:
            session.send_error(req_id, quirks.data_warning)  # a warning: the rest of the data still comes
        if self.competing_session:
            session.send_error(req_id, 10197)
            sub.quoting = True  # the tick loop resumes it when the session ends
            if snapshot:
                asyncio.get_running_loop().call_later(self.snapshot_delay, self._end_snapshot, session, sub)
            return
        session.send(protocol.tick_req_params(req_id, 0.01, "9c0001", 3))
        low, high = self.quote_latency
        delay = self._latency_rng.uniform(low, high) if high > 0 else 0.0
        if delay <= 0:
            self._first_quote(session, sub)
        else:
            asyncio.get_running_loop().call_later(delay, self._first_quote, session, sub)

    def _first_quote(self, session: ClientSession, sub: Subscription) -> None:
        """The first ticks of a subscription, once its quote latency has passed (if it is still open)."""
        if session.closed or session.mkt.get(sub.req_id) is not sub:
            return  # cancelled (or the client left) before the quote came: nothing is sent, as at IB
        latency = time.monotonic() - sub.started_at
        if not self.competing_session:
            quote = self.market.quote(sub.contract)
            messages = tick_messages(
                sub.req_id, quote, self.book.quirks.get(sub.contract.conid), initial=True
            )
            session.send_many(messages, ticks=len(messages))
            self.counters.note_first_quote(latency)
        sub.quoting = True
        if sub.snapshot:
            remaining = max(0.0, self.snapshot_delay - latency)
            asyncio.get_running_loop().call_later(remaining, self._end_snapshot, session, sub)

    def _end_snapshot(self, session: ClientSession, sub: Subscription) -> None:
        if session.mkt.get(sub.req_id) is sub:
            del session.mkt[sub.req_id]
            session.send(protocol.tick_snapshot_end(sub.req_id))

    # ---- the tick cycle -----------------------------------------------------------------------------------
    @property
    def streaming(self) -> bool:
        return not (self.feed_down or self.competing_session)

    def push_ticks(self) -> None:
        """One cycle's ticks to every open stream that has had its first quote."""
        quirks = self.book.quirks
        for session in list(self.clients.sessions):
            messages: list[list[object]] = []
            for sub in session.mkt.values():
                if sub.quoting and not sub.snapshot:
                    quote = self.market.quote(sub.contract)
                    messages.extend(tick_messages(sub.req_id, quote, quirks.get(sub.contract.conid), False))
            session.send_many(messages, ticks=len(messages))

    # ---- switches -----------------------------------------------------------------------------------------
    def set_quote_latency(self, low: float, high: float) -> None:
        """First ticks of each new subscription come a seeded uniform [low, high] seconds after reqMktData."""
        self.quote_latency = check_latency(low, high)
        log.info("quote latency %.3f..%.3fs", low, high)

    def set_ticks_in_flight_at_cancel(self, active: bool) -> None:
        """On: each cancel of a quoting stream is preceded by one more cycle of its ticks, the ones IB had
        sent before it read the cancel."""
        self.ticks_in_flight_at_cancel = active
        log.info("ticks in flight at a cancel %s", "on" if active else "off")

    def set_competing_session(self, active: bool) -> None:
        """10197: another live session (same user elsewhere) takes the market data; every stream is told and
        gets no ticks until it ends. Lines stay held."""
        self.competing_session = active
        if active:
            for session in list(self.clients.sessions):
                for sub in list(session.mkt.values()):
                    if not sub.snapshot:
                        session.send_error(sub.req_id, 10197)
        log.info("competing live session %s", "started" if active else "ended")

    def stats(self) -> dict[str, Any]:
        return {
            "feed_down": self.feed_down,
            "quote_latency": list(self.quote_latency),
            "competing_session": self.competing_session,
            "ticks_in_flight_at_cancel": self.ticks_in_flight_at_cancel,
        }


def check_latency(low: float, high: float) -> tuple[float, float]:
    if not 0 <= low <= high:
        raise ValueError(f"quote latency must satisfy 0 <= min <= max, got min={low} max={high}")
    return float(low), float(high)
