"""GatewaySimulator: an asyncio TCP server that speaks the TWS API like IB Gateway, over a simulated book.

It listens, accepts connections and runs the clocks (ticks, P&L, portfolio pushes); the state lives with
its owners, which it wires together: `clients` (connections, clientIds), `lines` (the gateway-wide line
count), `feed` (market-data subscriptions and ticks), `valuation` (values and P&L), `accounts`
(reqPositions / reqAccountUpdates), `changes` (book edits) and `counters`. Faults a real gateway shows
(a crash, the daily restart, lost connectivity, a competing session) are switched on here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

from v6_positions.simulator import protocol
from v6_positions.simulator.accounts import AccountUpdates
from v6_positions.simulator.book import Book, Quirks
from v6_positions.simulator.book_changes import BookChanges
from v6_positions.simulator.clients import MAX_CLIENTS, ClientRegistry
from v6_positions.simulator.details import ContractDetails
from v6_positions.simulator.dispatch import RequestDispatcher
from v6_positions.simulator.feed import NO_LATENCY, MarketDataFeed
from v6_positions.simulator.historical import HistoricalData
from v6_positions.simulator.lines import LineCount
from v6_positions.simulator.market import Market
from v6_positions.simulator.session import ClientSession
from v6_positions.simulator.stats import SimStats
from v6_positions.simulator.valuation import Valuation

log = logging.getLogger(__name__)

PACING_LIMIT = 50  # messages per second per client, IB's documented limit
# IB drops a client that keeps flooding; here: more violations than this within one second.
PACING_DISCONNECT_AFTER = 100


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
        step_minutes: float = 1.0,  # market minutes each tick walks (1: a trading day in ~98 s of 0.25 s)
        snapshot_delay: float = 0.2,
        max_clients: int = MAX_CLIENTS,
        pacing_limit: int = PACING_LIMIT,
        pacing_disconnect_after: int = PACING_DISCONNECT_AFTER,
        client_id_linger: float = 0.0,
        quote_latency: tuple[float, float] = NO_LATENCY,
        ticks_in_flight_at_cancel: bool = True,
    ) -> None:
        self.book = book
        self.host = host
        self.port = port
        self.portfolio_interval = portfolio_interval
        self.tick_interval = tick_interval
        self.pacing_limit = pacing_limit
        self.pacing_disconnect_after = pacing_disconnect_after
        self.counters = SimStats()
        self.market = Market(book, seed, step_minutes)
        self.clients = ClientRegistry(self.counters, max_clients, client_id_linger)
        self.lines = LineCount(self.clients, self.counters, max_lines)
        self.feed = MarketDataFeed(
            book,
            self.market,
            self.clients,
            self.lines,
            self.counters,
            snapshot_delay=snapshot_delay,
            quote_latency=quote_latency,
            seed=seed,
            ticks_in_flight_at_cancel=ticks_in_flight_at_cancel,
        )
        self.valuation = Valuation(book, self.market, self.counters)
        self.accounts = AccountUpdates(book, self.clients, self.valuation, self.counters)
        self.changes = BookChanges(book, self.market, self.accounts)
        self.historical = HistoricalData(book, self.market)
        self.dispatcher = RequestDispatcher(
            self.counters,
            book.accounts,
            self.feed.handlers(),
            self.accounts.handlers(),
            self.valuation.handlers(),
            ContractDetails(book).handlers(),
            self.historical.handlers(),
        )
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reopen_task: asyncio.Task[None] | None = None

    # ---- lifecycle ----------------------------------------------------------------------------------------
    async def __aenter__(self) -> GatewaySimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self._listen()
        self._spawn(self._tick_loop())
        self._spawn(self._portfolio_loop())
        log.info(
            "gateway simulator listening on %s:%d (%d positions, max_lines=%d)",
            self.host,
            self.port,
            len(self.book.positions),
            self.lines.max_lines,
        )

    async def stop(self) -> None:
        if self._reopen_task:
            self._reopen_task.cancel()
        await self._close_listener()
        await self.disconnect_all()
        self.clients.forget_held()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    @property
    def accepting(self) -> bool:
        return self._server is not None

    @property
    def sessions(self) -> set[ClientSession]:
        return self.clients.sessions

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

    # ---- connections (the SessionHost a ClientSession talks to) -------------------------------------------
    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.clients.admit():
            writer.close()
            return
        session = ClientSession(self, reader, writer, self.clients.next_conn_id())
        self.clients.sessions.add(session)
        task = asyncio.current_task()
        if task is not None:  # so stop() can wait for every connection handler
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await session.run()

    def register_client(self, session: ClientSession, client_id: int) -> bool:
        return self.clients.register(session, client_id, self.book.accounts)

    def dispatch(self, session: ClientSession, fields: list[str]) -> None:
        self.dispatcher.dispatch(session, fields)

    def session_closed(self, session: ClientSession, linger: bool = True) -> None:
        """Free what the connection held (lines, clientId, account updates); with `client_id_linger` > 0 and
        `linger`, the clientId and lines stay taken a while, as when IB notices a dead socket late."""
        if self.clients.remove(session, linger):
            self.accounts.session_gone(session)

    # ---- clocks -------------------------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        pnl_every = max(1, round(1.0 / self.tick_interval)) if self.tick_interval > 0 else 1
        for cycle in itertools.count():
            await asyncio.sleep(self.tick_interval)
            if self.feed.feed_down:
                continue
            try:
                self.market.step()
                if self.feed.streaming:  # a competing session stops market data, not P&L
                    self.feed.push_ticks()
                if cycle % pnl_every == 0:
                    for session in list(self.clients.sessions):
                        self.valuation.push_pnl(session)
            except Exception:
                log.exception("tick loop failed; continuing")

    async def _portfolio_loop(self) -> None:
        while True:
            await asyncio.sleep(self.portfolio_interval)
            if not self.feed.feed_down:
                try:
                    self.accounts.push_portfolio()
                except Exception:
                    log.exception("portfolio push failed; continuing")

    # ---- faults -------------------------------------------------------------------------------------------
    async def disconnect_all(self) -> int:
        """Drop every connection (as a gateway crash would). Returns how many were dropped."""
        sessions = list(self.clients.sessions)
        for session in sessions:
            session.close()
        for session in sessions:
            self.session_closed(session, linger=False)
        self.clients.drop_lingering()
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
        self.clients.forget_held()
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
        self.feed.feed_down = code == 1100
        for session in list(self.clients.sessions):
            if session.client_id is None:
                continue
            if code == 1101:
                session.mkt.clear()
                session.pnl_single.clear()
                session.pnl.clear()
            session.send_error(-1, code)
        if code == 1101:
            self.accounts.release()
        log.info("connectivity %d sent to %d clients", code, len(self.clients.clients))

    async def set_competing_session(self, active: bool) -> None:
        self.feed.set_competing_session(active)

    # ---- switches and book changes (async: SimulatorThread and the control API await them) ----------------
    async def hold_lines(self, lines: int) -> None:
        self.lines.hold(lines)

    async def hold_client_id(self, client_id: int, seconds: float) -> None:
        self.clients.hold_client_id(client_id, seconds)

    async def set_client_id_linger(self, seconds: float) -> None:
        self.clients.set_client_id_linger(seconds)

    async def set_quote_latency(self, low: float, high: float) -> None:
        self.feed.set_quote_latency(low, high)

    async def set_ticks_in_flight_at_cancel(self, active: bool) -> None:
        self.feed.set_ticks_in_flight_at_cancel(active)

    async def set_quirks(self, conid: int, **fields: Any) -> Quirks:
        return self.changes.set_quirks(conid, **fields)

    async def set_position(
        self, account: str, conid: int, position: float, avg_cost: float | None = None, **contract: Any
    ) -> None:
        self.changes.set_position(account, conid, position, avg_cost, **contract)

    # ---- stats --------------------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        self.counters.reset(self.lines.in_use())
        self.historical.reset()
        for session in self.clients.sessions:
            session.reset_counts()

    def stats(self) -> dict[str, Any]:
        """Everything GET /stats returns (JSON-ready: string keys)."""
        return {
            **self.lines.stats(),
            **self.counters.as_dict(),
            **self.clients.stats(self.accounts.holder),
            **self.accounts.stats(),
            **self.feed.stats(),
            **self.historical.stats(),
            "accepting": self.accepting,
            "port": self.port,
            "pacing_limit": self.pacing_limit,
            "positions": len(self.book.positions),
            "market_steps": self.market.steps,
        }
