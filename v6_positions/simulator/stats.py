"""Counters the simulator keeps so tests and the control API can see what clients did."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class SimStats:
    errors: Counter[int] = field(default_factory=Counter)  # error code -> times sent to any client
    orders_received: int = 0
    pacing_violations: int = 0
    pacing_disconnects: int = 0  # clients dropped for flooding past the rate
    first_quotes: int = 0  # subscriptions whose first quote went out
    first_quote_latency_total: float = 0.0  # seconds, summed over first_quotes
    first_quote_latency_max: float = 0.0
    messages_received: int = 0
    messages_sent: int = 0
    tick_messages_sent: int = 0
    max_lines_in_use: int = 0
    subscribe_count: int = 0
    cancel_count: int = 0
    snapshot_count: int = 0
    connections_accepted: int = 0
    connections_rejected: int = 0
    bad_input: int = 0  # malformed frames, unknown ids, bad fields, garbage handshakes
    # per clientId, kept after the client leaves: who got which error, who asked for what
    errors_by_client: dict[int, Counter[int]] = field(default_factory=dict)
    account_updates_requests_by_client: Counter[int] = field(default_factory=Counter)
    pnl_single_requests_by_client: Counter[int] = field(default_factory=Counter)
    peak_rate_by_client: dict[int, int] = field(default_factory=dict)  # most messages in any 1 s window

    def note_rate(self, client_id: int | None, rate: int) -> None:
        if client_id is not None and rate > self.peak_rate_by_client.get(client_id, 0):
            self.peak_rate_by_client[client_id] = rate

    def note_first_quote(self, latency: float) -> None:
        self.first_quotes += 1
        self.first_quote_latency_total += latency
        self.first_quote_latency_max = max(self.first_quote_latency_max, latency)

    def note_error(self, client_id: int | None, code: int) -> None:
        self.errors[code] += 1
        if client_id is not None:
            self.errors_by_client.setdefault(client_id, Counter())[code] += 1

    def reset(self, lines_in_use: int) -> None:
        fresh = SimStats(max_lines_in_use=lines_in_use)
        for name in self.__slots__:
            setattr(self, name, getattr(fresh, name))

    def as_dict(self) -> dict[str, object]:
        return {
            "errors": {str(code): n for code, n in sorted(self.errors.items())},
            "orders_received": self.orders_received,
            "pacing_violations": self.pacing_violations,
            "pacing_disconnects": self.pacing_disconnects,
            "first_quotes": self.first_quotes,
            "first_quote_latency_mean_ms": round(1000 * self.first_quote_latency_total / self.first_quotes, 1)
            if self.first_quotes
            else None,
            "first_quote_latency_max_ms": round(1000 * self.first_quote_latency_max, 1),
            "messages_received": self.messages_received,
            "messages_sent": self.messages_sent,
            "tick_messages_sent": self.tick_messages_sent,
            "max_lines_in_use": self.max_lines_in_use,
            "subscribe_count": self.subscribe_count,
            "cancel_count": self.cancel_count,
            "snapshot_count": self.snapshot_count,
            "connections_accepted": self.connections_accepted,
            "connections_rejected": self.connections_rejected,
            "bad_input": self.bad_input,
            "errors_by_client": {
                str(cid): {str(code): n for code, n in sorted(counts.items())}
                for cid, counts in sorted(self.errors_by_client.items())
            },
            "account_updates_requests_by_client": _by_client(self.account_updates_requests_by_client),
            "pnl_single_requests_by_client": _by_client(self.pnl_single_requests_by_client),
            "peak_rate_by_client": {str(cid): n for cid, n in sorted(self.peak_rate_by_client.items())},
        }


def _by_client(counts: Counter[int]) -> dict[str, int]:
    return {str(cid): n for cid, n in sorted(counts.items())}
