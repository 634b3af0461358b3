"""One read-only ib_async connection that stays up: connect, heartbeat, reconnect with backoff.

- Always `readonly=True`: nothing here can place, modify or cancel an order.
- Never asks for account updates: IB serves them to ONE client per gateway and a new subscriber takes them
  from the trader's bot (2100). Positions come from reqPositions (multi-client safe); valuations from
  zero-line reqPnLSingle requests (`zero_line/valuation_sweep.py`).
- Reconnects when the socket drops and when the heartbeat (reqCurrentTime) fails. A gateway that reports its
  IB link lost (1100/2110) but still answers the heartbeat is left alone: IB's nightly reset stops data for
  minutes without dropping the socket, and a new socket would not bring IB back sooner. 1101/1102 or the
  farms' OK messages (2104/2106/2158) end the wait; only after `connectivity_grace_s` (minutes) without any
  of them is the socket renewed.
- The stream keeps its clientId: on 326 (in use: usually our own previous socket the gateway has not dropped
  yet, or a second stream started by mistake) it waits and retries the SAME id with backoff
  (`waiting_for_client_id` says so), so two streams never hold lines for the same legs. Helper clients (batch,
  benchmarks) get a range of ids disjoint from the stream's (`client_ids.py`) and move within it on 326.
- Backoff is exponential with jitter and only resets once a heartbeat proved the new connection healthy, so
  a gateway that accepts and drops at once is not hammered.
- The supervisor loop is also the heartbeat, so probing never stops while disconnected (LEAN's 3-day outage),
  and it survives any error of its own (logged, then retried after the backoff).
- Requests are throttled at 40 messages/s (ib_async's default is 45) to leave IB's 50/s limit some room when
  a burst (start-up subscriptions, a 1101 replay) reaches the gateway bunched.

IBSession is one lifecycle (connect, 326 wait, heartbeat, link loss, reconnect) whose steps share its fields,
so they stay together; the parts with a life of their own live in `backoff.py` and `client_ids.py`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from ib_async import IB
from ib_async.ib import StartupFetch

from v6_positions.config import Settings
from v6_positions.ib.connection.backoff import Backoff
from v6_positions.ib.connection.client_ids import ClientIdRange
from v6_positions.ib.connection.message_codes import (
    CLIENT_ID_IN_USE,
    CONNECTIVITY_LOST,
    FARM_OK,
    RESTORED_DATA_KEPT,
    RESTORED_DATA_LOST,
)
from v6_positions.ib.connection.position_log import positions_summary, quiet_position_lines

log = logging.getLogger(__name__)

# Positions only: account updates (one subscriber per gateway) belong to whoever else wants them, and
# orders/executions are not our business. ib_async's default would send reqAccountUpdates(Multi).
STREAM_FETCH = StartupFetch.POSITIONS
BATCH_FETCH = StartupFetch.POSITIONS
# ib_async's client throttle (messages per second); IB's limit is 50 (error 100 past it).
MAX_MESSAGES_PER_S = 40


@dataclass(slots=True, frozen=True)
class SessionConfig:
    host: str = "127.0.0.1"
    port: int = 4002
    client_id: int = 10
    # 1 (the stream): 326 means wait and retry this very id. >1 (helpers): move on within the range.
    client_id_count: int = 1
    client_id_retry_base_s: float = 5.0  # 326 on the stream's id: first wait, doubling up to the cap
    client_id_retry_cap_s: float = 30.0
    account: str = ""
    connect_timeout_s: float = 10.0
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    backoff_jitter: float = 0.2  # +-20 %
    heartbeat_interval_s: float = 10.0
    heartbeat_timeout_s: float = 5.0
    connectivity_grace_s: float = 900.0  # 1100 with a live heartbeat: renew the socket only after this long

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> SessionConfig:
        base = cls(
            host=settings.ib_host,
            port=settings.ib_port,
            client_id=settings.ib_client_id,
            account=settings.ib_account,
        )
        return replace(base, **overrides)  # type: ignore[arg-type]

    @property
    def client_ids(self) -> tuple[int, ...]:
        return tuple(range(self.client_id, self.client_id + max(1, self.client_id_count)))


@dataclass(slots=True)
class SessionStats:
    """The connection as the stream's status shows it."""

    connected: bool
    client_id: int
    reconnects: int
    waiting_for_client_id: bool  # the clientId is in use: waiting for it, holding no line
    client_id_waits: int
    link_lost: bool  # 1100: the gateway lost IB; waiting for 1101/1102/farm OK


class ConnectResult(enum.Enum):
    CONNECTED = "connected"
    CLIENT_ID_IN_USE = "client_id_in_use"
    FAILED = "failed"


class IBSession:
    def __init__(
        self,
        config: SessionConfig,
        ib: IB | None = None,
        *,
        on_connected: Callable[[bool], Awaitable[None]] | None = None,
        on_disconnected: Callable[[], None] | None = None,
        # 1101 (data lost, socket kept): the owner re-requests; it returns why the socket must be renewed
        # instead (what it re-requested did not come back), or None.
        on_data_lost: Callable[[], Awaitable[str | None]] | None = None,
        fetch: StartupFetch = STREAM_FETCH,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.ib = ib or IB()
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_data_lost = on_data_lost
        self._fetch = fetch
        self._ids = ClientIdRange(config.client_ids)
        self._backoff = Backoff(config.backoff_base_s, config.backoff_cap_s, config.backoff_jitter, rng)
        self._id_backoff = Backoff(
            config.client_id_retry_base_s, config.client_id_retry_cap_s, config.backoff_jitter, rng
        )
        self._wake = asyncio.Event()
        self._reconnect_reason: str | None = None
        self._link_lost_at: float | None = None
        self._connect_errors: list[int] = []
        self._tasks: set[asyncio.Task] = set()
        self._unproven = False  # the last attempt failed, or the last connection was never proven healthy
        self.connects = 0
        self.reconnects = 0
        self.last_connect_error: str | None = None
        self.waiting_for_client_id = False  # the stream's id is in use: waiting for it, not streaming
        self.client_id_waits = 0
        self.ib.client.MaxRequests = MAX_MESSAGES_PER_S
        quiet_position_lines()  # ib_async logs each position of every (re)connect; we log one summary
        self.ib.disconnectedEvent += self._handle_disconnected
        self.ib.errorEvent += self._handle_error

    # -- state -----------------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.ib.isConnected()

    @property
    def client_id(self) -> int:
        return self._ids.current

    @property
    def link_lost(self) -> bool:
        """The gateway said it lost IB (1100/2110) and has not said it is back."""
        return self._link_lost_at is not None

    @property
    def roams(self) -> bool:
        """Helper clients move to another id of their range on 326; the stream never does."""
        return len(self.config.client_ids) > 1

    def stats(self) -> SessionStats:
        return SessionStats(
            self.connected, self.client_id, self.reconnects, self.waiting_for_client_id,
            self.client_id_waits, self.link_lost,
        )

    def request_reconnect(self, reason: str) -> None:
        self._reconnect_reason = reason
        self._wake.set()

    # -- supervisor ------------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Keep a connection until `stop` is set; never returns early, never raises on IB trouble."""
        stop_task = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                try:
                    await self._supervise_once(stop, stop_task)
                except Exception:  # the supervisor must outlive its own bugs: a dead one never reconnects
                    log.exception("IB session supervisor failed; retrying")
                    self._unproven = True
                    if self.ib.isConnected():
                        self.ib.disconnect()
        finally:
            stop_task.cancel()

    async def _supervise_once(self, stop: asyncio.Event, stop_task: asyncio.Future) -> None:
        if not self.connected:
            if self._unproven:
                delay = self._backoff.next_delay()
                log.warning("IB connect: retry in %.1fs (%s)", delay, self.last_connect_error)
                await asyncio.wait({stop_task}, timeout=delay)  # only stop cuts a backoff short
                self._wake.clear()  # wake-ups while disconnected were about this very disconnect
                if stop.is_set():
                    return
            result = await self._connect_once(stop_task)
            if stop.is_set():
                return
            if result is ConnectResult.CLIENT_ID_IN_USE:
                if self.roams:
                    # The next id right away; once every id of the range was busy, back off like any failure.
                    self._unproven = self._unproven or self._ids.wrapped
                    return
                await self._wait_for_client_id(stop_task)
                return
            self._unproven = True  # until a heartbeat proves this connection healthy
            if result is ConnectResult.CONNECTED:
                self.waiting_for_client_id = False
                self._id_backoff.reset()
                await self._after_connect()
            return
        await self._sleep(self._next_wake_in(), stop_task)
        if not stop.is_set():
            await self._check_connection()

    async def _wait_for_client_id(self, stop_task: asyncio.Future) -> None:
        """326 on the stream's own id: another stream holds it, or the gateway has not dropped our previous
        socket yet. Streaming under another id would double the lines for the same legs, so wait for it."""
        self.waiting_for_client_id = True
        self.client_id_waits += 1
        self._unproven = False  # this wait is the backoff; no second one on top
        delay = self._id_backoff.next_delay()
        log.warning(
            "clientId %s is in use (another stream, or our previous connection not yet dropped by the "
            "gateway); not streaming under another id: retrying clientId %s in %.1fs",
            self.client_id, self.client_id, delay,
        )
        await asyncio.wait({stop_task}, timeout=delay)
        self._wake.clear()

    async def connect(self, attempts: int | None = None) -> None:
        """One-shot connect for short-lived clients (batch, benchmarks): tries each id of the range once
        on 326, `attempts` times on other failures; raises ConnectionError when it cannot connect."""
        never = asyncio.get_running_loop().create_future()  # no stop signal for a one-shot connect
        tries = attempts or len(self.config.client_ids)
        try:
            for _ in range(tries):
                result = await self._connect_once(never)
                if result is ConnectResult.CONNECTED:
                    self.connects += 1
                    return
        finally:
            never.cancel()
        where = f"{self.config.host}:{self.config.port}"
        raise ConnectionError(f"could not connect to {where}: {self.last_connect_error}")

    async def close(self) -> None:
        """Disconnect (the streamer cancels its streams first)."""
        for task in list(self._tasks):
            task.cancel()
        if self.ib.isConnected():
            self.ib.disconnect()

    async def _connect_once(self, stop_task: asyncio.Future) -> ConnectResult:
        client_id = self._ids.current
        self._connect_errors.clear()
        self._reconnect_reason = None
        cfg = self.config
        log.info("connecting to %s:%s clientId=%s (readonly)", cfg.host, cfg.port, client_id)
        connect = asyncio.ensure_future(
            self.ib.connectAsync(
                cfg.host,
                cfg.port,
                clientId=client_id,
                timeout=cfg.connect_timeout_s,
                readonly=True,  # always: this project never trades
                account=cfg.account,
                raiseSyncErrors=True,  # a timed-out positions request is not "zero positions"
                fetchFields=self._fetch,
            )
        )
        in_use = asyncio.ensure_future(self._wait_for_client_id_in_use())
        try:
            await asyncio.wait({connect, in_use, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            in_use.cancel()
        if not connect.done():
            connect.cancel()
            await asyncio.gather(connect, return_exceptions=True)
            if self.ib.isConnected():
                self.ib.disconnect()
            if any(code in CLIENT_ID_IN_USE for code in self._connect_errors):
                self.last_connect_error = f"clientId {client_id} in use"
                if self.roams:
                    log.warning("clientId %s already in use; trying %s", client_id, self._ids.advance())
                return ConnectResult.CLIENT_ID_IN_USE
            self.last_connect_error = "stopped"
            return ConnectResult.FAILED
        error = connect.exception()
        if error is not None:
            self.last_connect_error = repr(error)
            if any(code in CLIENT_ID_IN_USE for code in self._connect_errors):
                if self.roams:
                    self._ids.advance()
                return ConnectResult.CLIENT_ID_IN_USE
            return ConnectResult.FAILED
        summary = positions_summary(self.ib.positions(), self.ib.managedAccounts())
        log.info("positions at connect (clientId=%s): %s", client_id, summary)
        return ConnectResult.CONNECTED

    async def _wait_for_client_id_in_use(self) -> None:
        while not any(code in CLIENT_ID_IN_USE for code in self._connect_errors):
            await self._wake.wait()
            self._wake.clear()

    async def _after_connect(self) -> None:
        first = self.connects == 0
        self.connects += 1
        if not first:
            self.reconnects += 1
        self._link_lost_at = None
        log.info("connected clientId=%s (%s)", self._ids.current, "first" if first else "reconnect")
        if self._on_connected is not None:
            try:
                await self._on_connected(first)
            except Exception:
                # A failed resync leaves the stream wrong; reconnecting is the clean way to try again.
                log.exception("resync after connect failed; reconnecting")
                self.request_reconnect("resync failed")
                if self.ib.isConnected():
                    self.ib.disconnect()

    def _next_wake_in(self) -> float:
        wait = self.config.heartbeat_interval_s
        if self._link_lost_at is not None:
            left = self._link_lost_at + self.config.connectivity_grace_s - time.monotonic()
            wait = min(wait, max(0.0, left))
        return wait

    async def _check_connection(self) -> None:
        if not self.connected:
            return
        if self._reconnect_reason is not None:
            log.warning("reconnecting: %s", self._reconnect_reason)
            self.ib.disconnect()
            return
        if self._link_lost_at is not None:
            if time.monotonic() - self._link_lost_at >= self.config.connectivity_grace_s:
                grace = self.config.connectivity_grace_s
                log.warning("IB link lost for %.0fs without restore or farm OK; renewing the socket", grace)
                self._link_lost_at = None
                self.ib.disconnect()
                return
        try:
            await asyncio.wait_for(self.ib.reqCurrentTimeAsync(), self.config.heartbeat_timeout_s)
            if self._link_lost_at is None:  # healthy: the next drop reconnects at once, backoff from scratch
                self._unproven = False
                self._backoff.reset()
        except (TimeoutError, ConnectionError) as exc:
            log.warning("heartbeat failed (%r); reconnecting", exc)
            if self.ib.isConnected():
                self.ib.disconnect()

    async def _sleep(self, seconds: float, stop_task: asyncio.Future) -> None:
        """Sleep until the timeout, a wake-up (disconnect, error, request) or stop. A wake-up signalled
        before the call is not lost: the event is only cleared after it was seen."""
        if not self._wake.is_set():
            wake = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait(
                    {wake, stop_task}, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                wake.cancel()
        self._wake.clear()

    # -- ib_async events -------------------------------------------------------------------------------------
    def _handle_disconnected(self) -> None:
        log.warning("disconnected from IB")
        if self._on_disconnected is not None:
            try:
                self._on_disconnected()
            except Exception:
                log.exception("on_disconnected callback failed")
        self._wake.set()

    def _handle_error(self, req_id: int, code: int, message: str, contract: object = None) -> None:
        if code in CLIENT_ID_IN_USE:
            self._connect_errors.append(code)
            self._wake.set()
        elif code in CONNECTIVITY_LOST:
            log.warning("IB link lost (%s): %s; waiting for restore, the heartbeat judges the socket",
                        code, message)
            if self._link_lost_at is None:
                self._link_lost_at = time.monotonic()
            self._wake.set()
        elif code in RESTORED_DATA_LOST:
            log.warning("IB link restored, data lost (%s): re-subscribing", code)
            self._link_lost_at = None
            if self._on_data_lost is not None:
                self._spawn(self._recover_data(self._on_data_lost))
        elif code in RESTORED_DATA_KEPT:
            log.info("IB link restored, data kept (%s)", code)
            self._link_lost_at = None
        elif code in FARM_OK and self._link_lost_at is not None:
            log.info("IB data farm OK (%s) after a link loss: data flowing again", code)
            self._link_lost_at = None

    async def _recover_data(self, on_data_lost: Callable[[], Awaitable[str | None]]) -> None:
        reason = await on_data_lost()
        if reason is not None:
            self.request_reconnect(reason)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)  # keep a reference: un-referenced tasks can vanish mid-flight

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("background task failed", exc_info=t.exception())

        task.add_done_callback(done)
