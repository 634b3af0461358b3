"""Who is connected: the open connections, the clientId table, and ids the gateway still holds.

As at IB, a clientId stays taken while its socket lives, and (with `client_id_linger`) a while after the
socket died unnoticed; `hold_client_id` takes one with no socket at all. Either way a startApi with it gets
326.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

from v6_positions.simulator import protocol
from v6_positions.simulator.session import ClientSession
from v6_positions.simulator.stats import SimStats

log = logging.getLogger(__name__)

MAX_CLIENTS = 32
NEXT_ORDER_ID = 1  # read-only: no order is ever placed, so the id never moves


class ClientRegistry:
    """Owns the open sessions, the clientId table, lingering dead sockets and held ids."""

    def __init__(
        self, counters: SimStats, max_clients: int = MAX_CLIENTS, client_id_linger: float = 0.0
    ) -> None:
        self.counters = counters
        self.max_clients = max_clients
        self.client_id_linger = client_id_linger  # seconds a dead socket keeps its clientId and lines
        self.sessions: set[ClientSession] = set()
        self.clients: dict[int, ClientSession] = {}  # clientId -> session, after startApi
        self.lingering: dict[int, ClientSession] = {}  # clientId -> closed session the gateway still holds
        self.held_client_ids: dict[int, float] = {}  # clientId -> monotonic deadline (no socket at all)
        self._conn_ids = itertools.count(1)

    def next_conn_id(self) -> int:
        return next(self._conn_ids)

    def admit(self) -> bool:
        """Room for one more connection? Counted either way."""
        if len(self.sessions) >= self.max_clients:
            self.counters.connections_rejected += 1
            log.warning("refusing a connection: %d clients already connected", len(self.sessions))
            return False
        self.counters.connections_accepted += 1
        return True

    def holders(self) -> list[ClientSession]:
        """Every session whose lines still count: the open ones and the lingering dead ones."""
        return [*self.sessions, *self.lingering.values()]

    def register(self, session: ClientSession, client_id: int, accounts: list[str]) -> bool:
        """startApi: claim the clientId (326 if taken), then say hello the way IB Gateway does."""
        if client_id in self.clients or self._id_held(client_id):
            log.warning("clientId %d already in use; refusing %s", client_id, session.peer)
            session.send_error(-1, 326, client_id=client_id)
            return False
        session.client_id = client_id
        self.clients[client_id] = session
        session.send_many(
            [
                protocol.next_valid_id(NEXT_ORDER_ID),
                protocol.managed_accounts(accounts),
                *(protocol.error(-1, code) for code in (2104, 2106, 2158)),
            ]
        )
        log.info("client %d connected from %s", client_id, session.peer)
        return True

    def remove(self, session: ClientSession, linger: bool) -> bool:
        """Forget a closed connection; False when it was already gone. Its clientId and lines stay taken
        `client_id_linger` seconds when `linger` (a dead socket noticed late), else are freed at once."""
        if session not in self.sessions:
            return False
        self.sessions.discard(session)
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
                return True
            del self.clients[cid]
        session.mkt.clear()
        return True

    def _end_linger(self, session: ClientSession) -> None:
        cid = session.client_id
        if cid is not None and self.lingering.get(cid) is session:
            del self.lingering[cid]
            if self.clients.get(cid) is session:
                del self.clients[cid]
            log.info("client %d's dead socket dropped; %d lines freed", cid, len(session.mkt))
        session.mkt.clear()

    def drop_lingering(self) -> None:
        for session in list(self.lingering.values()):
            self._end_linger(session)

    def forget_held(self) -> None:
        """A restart: no id is held any more, by a dead socket or otherwise."""
        self.held_client_ids.clear()
        self.drop_lingering()

    def _id_held(self, client_id: int) -> bool:
        deadline = self.held_client_ids.get(client_id)
        if deadline is None:
            return False
        if deadline <= time.monotonic():
            del self.held_client_ids[client_id]
            return False
        return True

    def hold_client_id(self, client_id: int, seconds: float) -> None:
        """Keep `client_id` "in use" for `seconds` with no socket (0 releases it): its connects get 326."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        if seconds == 0:
            self.held_client_ids.pop(client_id, None)
        else:
            self.held_client_ids[client_id] = time.monotonic() + seconds
        log.info("clientId %d held for %.1fs", client_id, seconds)

    def set_client_id_linger(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        self.client_id_linger = seconds

    def stats(self, account_updates_holder: ClientSession | None) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "clients": sorted(
                (s.info(s is account_updates_holder) for s in self.sessions if s.client_id is not None),
                key=lambda c: c["client_id"],
            ),
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
        }
