"""Market-data lines: one gateway-wide count over every client, plus lines held outside the API.

At IB the limit is per account, not per connection: TWS watchlists and the phone app take lines too, and a
dead socket the gateway has not dropped yet still holds its lines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from v6_positions.simulator.clients import ClientRegistry
from v6_positions.simulator.stats import SimStats

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class LineCount:
    """Owns the lines held outside the API; counts the rest from the sessions' subscriptions."""

    clients: ClientRegistry
    counters: SimStats
    max_lines: int
    external_lines: int = 0  # lines held outside the API (TWS watchlists, the phone app)

    def in_use(self) -> int:
        return self.external_lines + sum(len(s.mkt) for s in self.clients.holders())

    def full(self) -> bool:
        return self.in_use() >= self.max_lines

    def note_peak(self) -> None:
        self.counters.max_lines_in_use = max(self.counters.max_lines_in_use, self.in_use())

    def by_client(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for session in self.clients.holders():
            if session.client_id is not None:
                out[session.client_id] = out.get(session.client_id, 0) + len(session.mkt)
        return out

    def hold(self, lines: int) -> None:
        """Lines held outside the API (TWS watchlists, the phone app): they count for every client."""
        if lines < 0:
            raise ValueError(f"lines must be >= 0, got {lines}")
        self.external_lines = lines
        self.note_peak()
        log.info("lines held outside the API: %d", lines)

    def stats(self) -> dict[str, Any]:
        by_conid: dict[str, int] = {}
        for session in self.clients.holders():
            for sub in session.mkt.values():
                by_conid[str(sub.contract.conid)] = by_conid.get(str(sub.contract.conid), 0) + 1
        return {
            "lines_in_use": self.in_use(),
            "max_lines": self.max_lines,
            "subscriptions_by_conid": by_conid,
            "external_lines": self.external_lines,
            "lines_by_client": {str(cid): n for cid, n in sorted(self.by_client().items())},
        }
