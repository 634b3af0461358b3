"""GatewaySimulator: an asyncio TCP server that speaks the TWS API like IB Gateway, over a simulated book.

Shared, gateway-wide state lives here (as at IB): the market-data line count across ALL clients (plus lines
held outside the API: TWS, the phone app), the single account-updates holder, the clientId table (with ids
still held by dead sockets the gateway has not dropped yet), and the fault switches (connectivity, restart,
a competing live session).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from typing import Any

from v6_positions.simulator import protocol
from v6_positions.simulator.book import (
    Book,
    BookContract,
    BookError,
    BookPosition,
    Quirks,
    Underlying,
    make_quirks,
)
from v6_positions.simulator.dispatch import (
    ContractQuery,
    RequestDispatcher,
    contract_fields,
    resolve_contract,
)
from v6_positions.simulator.market import Market, Quote
from v6_positions.simulator.protocol import Tick
from v6_positions.simulator.session import ClientSession, Subscription
from v6_positions.simulator.stats import SimStats

log = logging.getLogger(__name__)

MAX_CLIENTS = 32
_PLAIN = Quirks()
PACING_LIMIT = 50  # messages per second per client, IB's documented limit
# IB drops a client that keeps flooding; here: more violations than this within one second.
PACING_DISCONNECT_AFTER = 100
# IB's first ticks arrive ~100-300 ms after reqMktData (the farm looks the contract up and snapshots it):
# the `simulate` command's default. The class defaults to at-once quotes, which older tests were written for.
QUOTE_LATENCY = (0.1, 0.3)
NO_LATENCY = (0.0, 0.0)
STARTING_CASH = 1_000_000.0


class GatewaySimulator:
    """Async context manager: `async with GatewaySimulator(book) as sim: ... sim.port ...`."""

    def __init__(
        self,
        book: Book,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_lines: int = 100,
        portfolio_interval: float = 180.0,
        seed: int = 0,
        tick_interval: float = 0.25,
        snapshot_delay: float = 0.2,
        max_clients: int = MAX_CLIENTS,
        pacing_limit: int = PACING_LIMIT,
        pacing_disconnect_after: int = PACING_DISCONNECT_AFTER,
        client_id_linger: float = 0.0,
        quote_latency: tuple[float, float] = NO_LATENCY,
    ) -> None:
        self.book = book
        self.host = host
        self.port = port
        self.max_lines = max_lines
        self.portfolio_interval = portfolio_interval
        self.tick_interval = tick_interval
        self.snapshot_delay = snapshot_delay
        self.max_clients = max_clients
        self.pacing_limit = pacing_limit
        self.pacing_disconnect_after = pacing_disconnect_after
        self.quote_latency = _check_latency(*quote_latency)
        self._latency_rng = random.Random(f"{seed}:quote-latency")
        self.client_id_linger = client_id_linger  # seconds a dead socket keeps its clientId and lines
        self.external_lines = 0  # lines held outside the API (TWS watchlists, the phone app)
        self.lingering: dict[int, ClientSession] = {}  # clientId -> closed session the gateway still holds
        self.held_client_ids: dict[int, float] = {}  # clientId -> monotonic deadline (no socket at all)
        self.competing_session = False  # 10197: another live session took the market data
        self.market = Market(book, seed)
        self.counters = SimStats()
        self.dispatcher = RequestDispatcher(self)
        self.next_order_id = 1
        self.sessions: set[ClientSession] = set()
        self.clients: dict[int, ClientSession] = {}  # clientId -> session, after startApi
        self.account_updates_holder: ClientSession | None = None
        self.account_updates_account = ""
        self.feed_down = False  # between 1100 and 1101/1102: no ticks, as when IB's farms are unreachable
        self._conn_ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reopen_task: asyncio.Task[None] | None = None
        self._started = False

    # ---- lifecycle ----------------------------------------------------------------------------------------
    async def __aenter__(self) -> GatewaySimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self._listen()
        self._started = True
        self._spawn(self._tick_loop())
        self._spawn(self._portfolio_loop())
        log.info(
            "gateway simulator listening on %s:%d (%d positions, max_lines=%d)",
            self.host,
            self.port,
            len(self.book.positions),
            self.max_lines,
        )

    async def stop(self) -> None:
        if self._reopen_task:
            self._reopen_task.cancel()
        await self._close_listener()
        await self.disconnect_all()
        self._forget_held_ids()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._started = False

    @property
    def accepting(self) -> bool:
        return self._server is not None

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._on_connect, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- connections --------------------------------------------------------------------------------------
    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.sessions) >= self.max_clients:
            self.counters.connections_rejected += 1
            log.warning("refusing a connection: %d clients already connected", len(self.sessions))
            writer.close()
            return
        self.counters.connections_accepted += 1
        session = ClientSession(self, reader, writer, next(self._conn_ids))
        self.sessions.add(session)
        task = asyncio.current_task()
        if task is not None:  # so stop() can wait for every connection handler
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await session.run()

    def register_client(self, session: ClientSession, client_id: int) -> bool:
        """startApi: claim the clientId (326 if taken), then say hello the way IB Gateway does."""
        if client_id in self.clients or self._id_held(client_id):
            log.warning("clientId %d already in use; refusing %s", client_id, session.peer)
            session.send_error(-1, 326, client_id=client_id)
            return False
        session.client_id = client_id
        self.clients[client_id] = session
        session.send_many(
            [
                protocol.next_valid_id(self.next_order_id),
                protocol.managed_accounts(self.book.accounts),
                *(protocol.error(-1, code) for code in (2104, 2106, 2158)),
            ]
        )
        log.info("client %d connected from %s", client_id, session.peer)
        return True

    def session_closed(self, session: ClientSession, linger: bool = True) -> None:
        """Free everything the connection held: its lines, its clientId, account updates.

        With `client_id_linger` > 0 (and `linger`), the clientId and the lines stay taken that long, as
        when IB Gateway notices a dead socket late; a crash or restart (`linger=False`) frees all at once."""
        if session not in self.sessions:
            return  # already done (disconnect_all, then the connection handler's finally)
        self.sessions.discard(session)
        if self.account_updates_holder is session:
            self.release_account_updates()
        session.pnl_single.clear()
        session.pnl.clear()
        cid = session.client_id
        if cid is not None and self.clients.get(cid) is session:
            if linger and self.client_id_linger > 0:
                self.lingering[cid] = session
                session.linger_until = time.monotonic() + self.client_id_linger
                asyncio.get_running_loop().call_later(self.client_id_linger, self._end_linger, session)
                log.info(
                    "client %d's socket is gone; its id and %d lines stay held %.1fs",
                    cid,
                    len(session.mkt),
                    self.client_id_linger,
                )
                return
            del self.clients[cid]
        session.mkt.clear()

    def _end_linger(self, session: ClientSession) -> None:
        cid = session.client_id
        if cid is not None and self.lingering.get(cid) is session:
            del self.lingering[cid]
            if self.clients.get(cid) is session:
                del self.clients[cid]
            log.info("client %d's dead socket dropped; %d lines freed", cid, len(session.mkt))
        session.mkt.clear()

    def _drop_lingering(self) -> None:
        for session in list(self.lingering.values()):
            self._end_linger(session)

    def _id_held(self, client_id: int) -> bool:
        deadline = self.held_client_ids.get(client_id)
        if deadline is None:
            return False
        if deadline <= time.monotonic():
            del self.held_client_ids[client_id]
            return False
        return True

    def _forget_held_ids(self) -> None:
        self.held_client_ids.clear()
        self._drop_lingering()

    async def hold_client_id(self, client_id: int, seconds: float) -> None:
        """Keep `client_id` "in use" for `seconds` with no socket (0 releases it): its connects get 326."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        if seconds == 0:
            self.held_client_ids.pop(client_id, None)
        else:
            self.held_client_ids[client_id] = time.monotonic() + seconds
        log.info("clientId %d held for %.1fs", client_id, seconds)

    async def set_client_id_linger(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        self.client_id_linger = seconds

    # ---- lines --------------------------------------------------------------------------------------------
    def lines_in_use(self) -> int:
        return (
            self.external_lines
            + sum(len(s.mkt) for s in self.sessions)
            + sum(len(s.mkt) for s in self.lingering.values())
        )

    def lines_by_client(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for session in [*self.sessions, *self.lingering.values()]:
            if session.client_id is not None:
                out[session.client_id] = out.get(session.client_id, 0) + len(session.mkt)
        return out

    async def hold_lines(self, lines: int) -> None:
        """Lines held outside the API (TWS watchlists, the phone app): they count for every client."""
        if lines < 0:
            raise ValueError(f"lines must be >= 0, got {lines}")
        self.external_lines = lines
        self.counters.max_lines_in_use = max(self.counters.max_lines_in_use, self.lines_in_use())
        log.info("lines held outside the API: %d", lines)

    async def set_competing_session(self, active: bool) -> None:
        """10197: another live session (same user elsewhere) takes the market data; every stream is told and
        gets no ticks until it ends. Lines stay held."""
        self.competing_session = active
        if active:
            for session in list(self.sessions):
                for sub in list(session.mkt.values()):
                    if not sub.snapshot:
                        session.send_error(sub.req_id, 10197)
        log.info("competing live session %s", "started" if active else "ended")

    async def set_quirks(self, conid: int, **fields: Any) -> Quirks:
        """Change how IB's data for a known contract looks (fields as in a book file's position row)."""
        if conid not in self.book.contracts:
            raise ValueError(f"conid {conid} is not in the book")
        unknown = sorted(set(fields) - {"one_sided", "stale_last", "data_warning", "missing_greeks"})
        if unknown:
            raise ValueError(f"unknown quirk field {unknown[0]!r}")
        current = self.book.quirks.get(conid, Quirks())
        merged: dict[str, Any] = {
            "one_sided": current.one_sided,
            "stale_last": current.stale_last,
            "data_warning": current.data_warning,
            "missing_greeks": sorted(current.missing_greeks),
            **fields,
        }
        try:
            quirks = make_quirks(merged, "quirks")
        except BookError as exc:
            raise ValueError(str(exc)) from None
        self.book.quirks[conid] = quirks
        self.market.forget(conid)
        log.info("quirks of %d: %s", conid, quirks)
        return quirks

    def subscribe_market_data(
        self, session: ClientSession, req_id: int, query: ContractQuery, snapshot: bool
    ) -> None:
        if req_id in session.mkt:
            # IB: 322 duplicate ticker id; the existing subscription stays as it is.
            session.send_error(req_id, 322)
            return
        contract = resolve_contract(self.book.contracts, query)
        if contract is None:
            session.send_error(req_id, 200, f"{protocol.ERROR_TEXTS[200]} ({query.describe()})")
            return
        if self.lines_in_use() >= self.max_lines:
            session.send_error(req_id, 101)
            return
        sub = Subscription(req_id, contract, snapshot)
        session.mkt[req_id] = sub
        self.counters.subscribe_count += 1
        self.counters.snapshot_count += snapshot
        self.counters.max_lines_in_use = max(self.counters.max_lines_in_use, self.lines_in_use())
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
            messages = self._tick_messages(
                sub.req_id, sub.contract, self.market.quote(sub.contract), initial=True
            )
            session.send_many(messages, ticks=len(messages))
            self.counters.note_first_quote(latency)
        sub.quoting = True
        if sub.snapshot:
            remaining = max(0.0, self.snapshot_delay - latency)
            asyncio.get_running_loop().call_later(remaining, self._end_snapshot, session, sub)

    async def set_quote_latency(self, low: float, high: float) -> None:
        """First ticks of each new subscription come a seeded uniform [low, high] seconds after reqMktData."""
        self.quote_latency = _check_latency(low, high)
        log.info("quote latency %.3f..%.3fs", low, high)

    def _end_snapshot(self, session: ClientSession, sub: Subscription) -> None:
        if session.mkt.get(sub.req_id) is sub:
            del session.mkt[sub.req_id]
            session.send(protocol.tick_snapshot_end(sub.req_id))

    def cancel_market_data(self, session: ClientSession, req_id: int) -> None:
        if session.mkt.pop(req_id, None) is not None:
            self.counters.cancel_count += 1
        else:
            log.info("client %s cancelled unknown market data reqId %d", session.client_id, req_id)

    def _tick_messages(
        self, req_id: int, contract: BookContract, q: Quote, initial: bool
    ) -> list[list[object]]:
        quirks = self.book.quirks.get(contract.conid) or _PLAIN
        messages = [
            protocol.tick_price(req_id, Tick.BID, q.bid, q.bid_size),
            protocol.tick_price(req_id, Tick.ASK, q.ask, q.ask_size),
        ]
        if initial or not quirks.one_sided:  # a one-sided wing does not trade: its last stays stale
            messages.append(protocol.tick_price(req_id, Tick.LAST, q.last, q.last_size))
        messages.append(protocol.tick_size(req_id, Tick.VOLUME, q.volume))
        if initial:
            messages.append(protocol.tick_price(req_id, Tick.CLOSE, q.close, 0))
        g = q.greeks
        if g is not None:
            if not initial:
                kinds: tuple[Tick, ...] = (Tick.MODEL_OPTION,)
            elif quirks.one_sided:  # no bid, so no bid computation; none on the stale last either
                kinds = (Tick.ASK_OPTION, Tick.MODEL_OPTION)
            else:
                kinds = (Tick.BID_OPTION, Tick.ASK_OPTION, Tick.LAST_OPTION, Tick.MODEL_OPTION)
            prices = {
                Tick.BID_OPTION: q.bid,
                Tick.ASK_OPTION: q.ask,
                Tick.LAST_OPTION: q.last,
                Tick.MODEL_OPTION: g.price,
            }
            for kind in kinds:
                values = {
                    "implied_vol": g.implied_vol,
                    "delta": g.delta,
                    "opt_price": prices[kind],
                    "pv_dividend": 0.0,
                    "gamma": g.gamma,
                    "vega": g.vega,
                    "theta": g.theta,
                    "und_price": q.und_price,
                }
                for name in quirks.missing_greeks:  # IB's "not computed"
                    values[name] = protocol.GREEK_SENTINELS[name]
                messages.append(protocol.tick_option_computation(req_id, kind, **values))
        return messages

    async def _tick_loop(self) -> None:
        pnl_every = max(1, round(1.0 / self.tick_interval)) if self.tick_interval > 0 else 1
        for cycle in itertools.count():
            await asyncio.sleep(self.tick_interval)
            if self.feed_down:
                continue
            if self.competing_session:  # no market data; P&L (not market data) still flows
                self.market.step()
                for session in list(self.sessions):
                    if cycle % pnl_every == 0:
                        self._push_pnl(session)
                continue
            try:
                self.market.step()
                for session in list(self.sessions):
                    self._push_ticks(session)
                    if cycle % pnl_every == 0:
                        self._push_pnl(session)
            except Exception:
                log.exception("tick loop failed; continuing")

    def _push_ticks(self, session: ClientSession) -> None:
        messages: list[list[object]] = []
        for sub in session.mkt.values():
            if sub.quoting and not sub.snapshot:
                messages.extend(
                    self._tick_messages(
                        sub.req_id, sub.contract, self.market.quote(sub.contract), initial=False
                    )
                )
        session.send_many(messages, ticks=len(messages))

    def _push_pnl(self, session: ClientSession) -> None:
        messages = [self.pnl_single_message(r, a, c) for r, (a, c) in session.pnl_single.items()]
        messages += [self.pnl_message(r, a) for r, a in session.pnl.items()]
        session.send_many(messages)

    # ---- positions and account values ---------------------------------------------------------------------
    def position_message(self, pos: BookPosition) -> list[object]:
        c = pos.contract
        exchange = c.primary_exchange if c.sec_type == "STK" else ""  # IB leaves it empty for options
        return protocol.position(pos.account, contract_fields(c, exchange), pos.position, pos.avg_cost)

    def _valuation(self, pos: BookPosition) -> tuple[float, float, float]:
        """(marketPrice, marketValue, unrealizedPNL) by IB's conventions."""
        price = self.market.quote(pos.contract).mark
        value = round(price * pos.position * pos.contract.multiplier, 2)
        return price, value, round(value - pos.avg_cost * pos.position, 2)

    def portfolio_message(self, pos: BookPosition) -> list[object]:
        price, value, unrealized = self._valuation(pos)
        return protocol.portfolio_value(
            contract_fields(pos.contract, pos.contract.primary_exchange),
            pos.position,
            price,
            value,
            pos.avg_cost,
            unrealized,
            0.0,
            pos.account,
        )

    def account_values(self, account: str) -> list[tuple[str, str, str]]:
        gross = unrealized = 0.0
        for pos in self.book.account_positions(account):
            _, value, pnl = self._valuation(pos)
            gross += abs(value)
            unrealized += pnl
        net = STARTING_CASH + unrealized
        return [
            ("AccountCode", account, ""),
            ("AccountType", "INDIVIDUAL", ""),
            ("NetLiquidation", f"{net:.2f}", "USD"),
            ("TotalCashValue", f"{STARTING_CASH:.2f}", "USD"),
            ("SettledCash", f"{STARTING_CASH:.2f}", "USD"),
            ("BuyingPower", f"{net * 4:.2f}", "USD"),
            ("EquityWithLoanValue", f"{net:.2f}", "USD"),
            ("GrossPositionValue", f"{gross:.2f}", "USD"),
            ("AvailableFunds", f"{net * 0.8:.2f}", "USD"),
            ("ExcessLiquidity", f"{net * 0.85:.2f}", "USD"),
            ("UnrealizedPnL", f"{unrealized:.2f}", "USD"),
            ("RealizedPnL", "0.00", "USD"),
        ]

    def pnl_single_message(self, req_id: int, account: str, conid: int) -> list[object]:
        pos = self.book.positions.get((account, conid))
        if pos is None:
            return protocol.pnl_single(req_id, 0, 0.0, 0.0, 0.0, 0.0)
        quote = self.market.quote(pos.contract)
        _, value, unrealized = self._valuation(pos)
        daily = round((quote.mark - quote.close) * pos.position * pos.contract.multiplier, 2)
        return protocol.pnl_single(req_id, pos.position, daily, unrealized, 0.0, value)

    def pnl_message(self, req_id: int, account: str) -> list[object]:
        unrealized = sum(self._valuation(p)[2] for p in self.book.account_positions(account))
        return protocol.pnl(req_id, 0.0, round(unrealized, 2), 0.0)

    def take_account_updates(self, session: ClientSession, account: str) -> None:
        """One account-updates subscription per gateway: a new subscriber unsubscribes the old one (2100)."""
        previous = self.account_updates_holder
        if previous is not None and previous is not session:
            previous.send_error(-1, 2100)
            log.info(
                "account updates move from client %s to client %s", previous.client_id, session.client_id
            )
        self.account_updates_holder = session
        self.account_updates_account = account
        self._push_account(session, account, download_end=True)

    def release_account_updates(self) -> None:
        self.account_updates_holder = None
        self.account_updates_account = ""

    def _push_account(
        self,
        session: ClientSession,
        account: str,
        download_end: bool = False,
        positions: list[BookPosition] | None = None,
    ) -> None:
        if positions is None:
            positions = self.book.account_positions(account)
        messages = [protocol.account_value(k, v, c, account) for k, v, c in self.account_values(account)]
        messages += [self.portfolio_message(p) for p in positions]
        messages.append(protocol.account_time(time.strftime("%H:%M")))
        if download_end:
            messages.append(protocol.account_download_end(account))
        session.send_many(messages)

    async def _portfolio_loop(self) -> None:
        while True:
            await asyncio.sleep(self.portfolio_interval)
            holder = self.account_updates_holder
            if holder is not None and not self.feed_down:
                try:
                    self._push_account(holder, self.account_updates_account)
                except Exception:
                    log.exception("portfolio push failed; continuing")

    # ---- faults -------------------------------------------------------------------------------------------
    async def disconnect_all(self) -> int:
        """Drop every connection (as a gateway crash would). Returns how many were dropped."""
        sessions = list(self.sessions)
        for session in sessions:
            session.close()
        for session in sessions:
            self.session_closed(session, linger=False)
        self._drop_lingering()
        if sessions:
            log.info("dropped %d connections", len(sessions))
        await asyncio.sleep(0)
        return len(sessions)

    async def restart(self, down_seconds: float) -> None:
        """IB's daily restart: drop every socket, refuse connections for `down_seconds`, then accept again.
        Returns once the gateway is down; it comes back by itself."""
        if self._reopen_task:
            self._reopen_task.cancel()
        await self._close_listener()
        await self.disconnect_all()
        self._forget_held_ids()
        log.info("restart: refusing connections for %.1fs", down_seconds)
        self._reopen_task = asyncio.create_task(self._reopen_after(down_seconds))

    async def _reopen_after(self, down_seconds: float) -> None:
        await asyncio.sleep(down_seconds)
        for attempt in range(50):  # the port can linger briefly after close
            try:
                await self._listen()
                log.info("restart: accepting connections again on %d", self.port)
                return
            except OSError:
                await asyncio.sleep(0.1 * (attempt + 1))
        log.error("restart: could not listen on port %d again", self.port)

    async def wait_accepting(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not self.accepting:
                await asyncio.sleep(0.02)

    async def connectivity(self, code: int) -> None:
        """Send 1100 (lost), 1101 (restored, data lost: subscriptions dropped) or 1102 (restored, kept)."""
        if code not in protocol.CONNECTIVITY_CODES:
            raise ValueError(f"connectivity code must be one of 1100, 1101, 1102, got {code}")
        self.feed_down = code == 1100
        for session in list(self.sessions):
            if session.client_id is None:
                continue
            if code == 1101:
                session.mkt.clear()
                session.pnl_single.clear()
                session.pnl.clear()
            session.send_error(-1, code)
        if code == 1101:
            self.release_account_updates()
        log.info("connectivity %d sent to %d clients", code, len(self.clients))

    async def set_position(
        self, account: str, conid: int, position: float, avg_cost: float | None = None, **contract: Any
    ) -> None:
        """Open, change or close (position 0) a position; clients with reqPositions get a position message
        and the account-updates holder a portfolio update, as at IB.

        A contract the book does not know needs `symbol`, and for options `expiry`, `strike`, `right`
        (`sec_type` default "OPT", `multiplier` default 100)."""
        if account not in self.book.accounts:
            raise ValueError(f"unknown account {account!r}")
        known = self.book.contracts.get(conid)
        if known is None:
            known = self._new_contract(conid, contract)
        key = (account, conid)
        existing = self.book.positions.get(key)
        if avg_cost is None:
            avg_cost = existing.avg_cost if existing else self.market.quote(known).mark * known.multiplier
        pos = BookPosition(
            account, known, float(position), float(avg_cost), existing.strategy_id if existing else None
        )
        if position == 0:
            self.book.positions.pop(key, None)
        else:
            self.book.positions[key] = pos
        for session in list(self.sessions):
            if session.positions_active:
                session.send(self.position_message(pos))
        holder = self.account_updates_holder
        if holder is not None and self.account_updates_account == account:
            self._push_account(holder, account, positions=[pos])
        log.info("position %s %d -> %g", account, conid, position)

    def _new_contract(self, conid: int, fields: dict[str, Any]) -> BookContract:
        symbol = fields.get("symbol")
        if not symbol:
            raise ValueError(
                f"conid {conid} is unknown: give symbol (and expiry, strike, right for an option)"
            )
        sec_type = str(fields.get("sec_type", "OPT"))
        if symbol not in self.book.underlyings:
            price = float(fields.get("underlying_price", 100.0))
            self.book.underlyings[symbol] = Underlying(symbol, price, conid=conid if sec_type == "STK" else 0)
        if sec_type == "STK":
            contract = self.book.underlyings[symbol].stock_contract()
            contract.conid = conid
        else:
            try:
                contract = BookContract(
                    conid,
                    symbol,
                    "OPT",
                    str(fields["expiry"]),
                    float(fields["strike"]),
                    str(fields["right"]).upper()[:1],
                    int(fields.get("multiplier", 100)),
                )
            except KeyError as exc:
                raise ValueError(f"new option conid {conid} needs {exc.args[0]}") from None
        self.book.contracts[conid] = contract
        return contract

    # ---- stats --------------------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        self.counters.reset(self.lines_in_use())
        for session in self.sessions:
            session.pacing_violations = 0
            session.peak_rate = 0
            session.messages_received = 0
            session.errors.clear()

    def stats(self) -> dict[str, Any]:
        """Everything GET /stats returns (JSON-ready: string keys)."""
        by_conid: dict[str, int] = {}
        for session in [*self.sessions, *self.lingering.values()]:
            for sub in session.mkt.values():
                by_conid[str(sub.contract.conid)] = by_conid.get(str(sub.contract.conid), 0) + 1
        holder = self.account_updates_holder
        now = time.monotonic()
        out: dict[str, Any] = {
            "lines_in_use": self.lines_in_use(),
            "max_lines": self.max_lines,
            **self.counters.as_dict(),
            "clients": sorted(
                (s.info() for s in self.sessions if s.client_id is not None), key=lambda c: c["client_id"]
            ),
            "subscriptions_by_conid": by_conid,
            "account_updates_holder": holder.client_id if holder else None,
            "account_updates_account": self.account_updates_account or None,
            "accepting": self.accepting,
            "feed_down": self.feed_down,
            "port": self.port,
            "external_lines": self.external_lines,
            "lines_by_client": {str(cid): n for cid, n in sorted(self.lines_by_client().items())},
            "lingering_clients": [
                {
                    "client_id": cid,
                    "lines": len(s.mkt),
                    "released_in": round(max(0.0, (s.linger_until or now) - now), 3),
                }
                for cid, s in sorted(self.lingering.items())
            ],
            "held_client_ids": {
                str(cid): round(deadline - now, 3)
                for cid, deadline in sorted(self.held_client_ids.items())
                if deadline > now
            },
            "client_id_linger": self.client_id_linger,
            "quote_latency": list(self.quote_latency),
            "pacing_limit": self.pacing_limit,
            "competing_session": self.competing_session,
            "positions": len(self.book.positions),
            "market_steps": self.market.steps,
        }
        return out


def _check_latency(low: float, high: float) -> tuple[float, float]:
    if not 0 <= low <= high:
        raise ValueError(f"quote latency must satisfy 0 <= min <= max, got min={low} max={high}")
    return float(low), float(high)
