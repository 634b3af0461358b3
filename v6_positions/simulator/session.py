"""One client connection: handshake, framed reads, pacing, buffered writes, and its own subscriptions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Protocol

from v6_positions.simulator import protocol
from v6_positions.simulator.book import BookContract
from v6_positions.simulator.framing import FrameError, encode_message, read_frame, read_handshake
from v6_positions.simulator.stats import SimStats

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0
# A client that stops reading gets dropped rather than growing our memory without bound.
MAX_WRITE_BUFFER = 64 * 1024 * 1024


@dataclass(slots=True)
class Subscription:
    req_id: int
    contract: BookContract
    snapshot: bool
    started_at: float = field(default_factory=time.monotonic)
    # False until the first quote went out (quote latency): the tick loop leaves it alone until then
    quoting: bool = False


class SessionHost(Protocol):
    """What a connection needs from its gateway (GatewaySimulator is one): counters, the pacing rules, and
    where startApi, each request and the end of the connection go."""

    counters: SimStats
    pacing_limit: int
    pacing_disconnect_after: int

    def register_client(self, session: ClientSession, client_id: int) -> bool: ...

    def dispatch(self, session: ClientSession, fields: list[str]) -> None: ...

    def session_closed(self, session: ClientSession) -> None: ...


class ClientSession:
    def __init__(
        self, sim: SessionHost, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn_id: int
    ) -> None:
        self.sim = sim
        self.reader = reader
        self.writer = writer
        self.conn_id = conn_id
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.client_id: int | None = None
        self.connected_at = time.time()
        self.mkt: dict[int, Subscription] = {}
        self.pnl_single: dict[int, tuple[str, int]] = {}
        self.pnl: dict[int, str] = {}
        self.positions_active = False
        self.errors: Counter[int] = Counter()  # error code -> times sent on this connection
        self.messages_received = 0
        self.pacing_violations = 0
        self.peak_rate = 0  # most messages received within any one second
        self._recent: deque[float] = deque()  # receive times within the last second
        self._recent_violations: deque[float] = deque()
        self._tokens = float(sim.pacing_limit)
        self._last_refill = time.monotonic()
        self.closed = False
        self.linger_until: float | None = None  # set when the socket died but the gateway still holds it

    # ---- output -------------------------------------------------------------------------------------------
    def send(self, *messages: list[object]) -> None:
        self.send_many(messages)

    def send_many(self, messages: list[list[object]] | tuple[list[object], ...], ticks: int = 0) -> None:
        if self.closed or not messages:
            return
        self.writer.write(b"".join(encode_message(m) for m in messages))
        self.sim.counters.messages_sent += len(messages)
        self.sim.counters.tick_messages_sent += ticks
        transport = self.writer.transport
        if transport is not None and transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("client %s (%s) is not reading; dropping it", self.client_id, self.peer)
            self.close()

    def send_error(
        self, req_id: int, code: int, text: str | None = None, client_id: int | None = None
    ) -> None:
        """Send error/warning `code`; counted per clientId (`client_id` names a refused id: 326)."""
        self.sim.counters.note_error(client_id if client_id is not None else self.client_id, code)
        self.errors[code] += 1
        self.send(protocol.error(req_id, code, text))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()

    # ---- input --------------------------------------------------------------------------------------------
    def _note_message(self) -> bool:
        """Take one token for an incoming message; True when none is left (over 50 messages per second).

        A token bucket (capacity = limit, refilled at limit per second) rather than a strict sliding window:
        a client that paces itself at 45/s (ib_async) must not trip it when its bursts arrive slightly
        bunched by network or scheduling delays."""
        now = time.monotonic()
        recent = self._recent
        recent.append(now)
        while recent[0] <= now - 1.0:
            recent.popleft()
        if len(recent) > self.peak_rate:
            self.peak_rate = len(recent)
            self.sim.counters.note_rate(self.client_id, self.peak_rate)
        limit = self.sim.pacing_limit
        self._tokens = min(float(limit), self._tokens + (now - self._last_refill) * limit)
        self._last_refill = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return False
        return True

    async def run(self) -> None:
        """Serve this connection until the peer leaves or is dropped; never raises."""
        try:
            if await self._handshake():
                await self._serve()
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            partial = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
            log.info(
                "client %s (%s) disconnected%s", self.client_id, self.peer, " mid-message" if partial else ""
            )
        except FrameError as exc:
            self.sim.counters.bad_input += 1
            log.warning("client %s (%s) sent a bad frame, closing it: %s", self.client_id, self.peer, exc)
        except TimeoutError:
            self.sim.counters.bad_input += 1
            log.warning(
                "client %s did not complete the handshake in %ss; closing it", self.peer, HANDSHAKE_TIMEOUT_S
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("client %s (%s): unexpected failure, closing it", self.client_id, self.peer)
        finally:
            self.close()
            self.sim.session_closed(self)

    async def _handshake(self) -> bool:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            low, high, options = await read_handshake(self.reader)
            if not low <= protocol.SERVER_VERSION <= high:
                self.sim.counters.bad_input += 1
                log.warning(
                    "client %s offers versions %d..%d without %d; closing it",
                    self.peer,
                    low,
                    high,
                    protocol.SERVER_VERSION,
                )
                return False
            self.send(
                [
                    protocol.SERVER_VERSION,
                    time.strftime("%Y%m%d %H:%M:%S", time.gmtime()) + " Greenwich Mean Time",
                ]
            )
            fields = await read_frame(self.reader)
        self.sim.counters.messages_received += 1
        self.messages_received += 1
        if fields[0] != str(int(protocol.In.START_API)) or len(fields) < 3:
            self.sim.counters.bad_input += 1
            log.warning("client %s sent %r instead of startApi; closing it", self.peer, fields[:3])
            return False
        try:
            client_id = int(fields[2])
        except ValueError:
            self.sim.counters.bad_input += 1
            log.warning("client %s sent startApi with clientId %r; closing it", self.peer, fields[2])
            return False
        return self.sim.register_client(self, client_id)

    async def _serve(self) -> None:
        while not self.closed:
            fields = await read_frame(self.reader)
            self.messages_received += 1
            self.sim.counters.messages_received += 1
            if self._note_message():
                self.pacing_violations += 1
                self.sim.counters.pacing_violations += 1
                self.send_error(-1, 100, f"{protocol.ERROR_TEXTS[100]}:max={self.sim.pacing_limit} (1)")
                if self._keeps_flooding():
                    self.sim.counters.pacing_disconnects += 1
                    log.warning(
                        "client %s (%s) keeps exceeding %d messages/s; dropping it, as IB does",
                        self.client_id,
                        self.peer,
                        self.sim.pacing_limit,
                    )
                    return
            self.sim.dispatch(self, fields)

    def _keeps_flooding(self) -> bool:
        """IB answers each message over the rate with 100 and drops a client that keeps it up: here, more
        than `pacing_disconnect_after` violations within one second (0 = never drop)."""
        limit = self.sim.pacing_disconnect_after
        if limit <= 0:
            return False
        now = time.monotonic()
        recent = self._recent_violations
        recent.append(now)
        while recent[0] <= now - 1.0:
            recent.popleft()
        return len(recent) > limit

    def reset_counts(self) -> None:
        self.pacing_violations = 0
        self.peak_rate = 0
        self.messages_received = 0
        self.errors.clear()

    def info(self, holds_account_updates: bool) -> dict[str, object]:
        return {
            "client_id": self.client_id,
            "peer": self.peer,
            "lines": len(self.mkt),
            "streams": sum(1 for s in self.mkt.values() if not s.snapshot),
            "snapshots": sum(1 for s in self.mkt.values() if s.snapshot),
            "pnl_single": len(self.pnl_single),
            "positions_subscribed": self.positions_active,
            "account_updates": holds_account_updates,
            "messages_received": self.messages_received,
            "pacing_violations": self.pacing_violations,
            "peak_messages_per_s": self.peak_rate,
            "errors": {str(code): n for code, n in sorted(self.errors.items())},
            "connected_at": self.connected_at,
        }
