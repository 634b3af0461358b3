"""Which clientIds this project uses on a gateway, so the stream's can never collide with a helper's.

Layout for `V6_IB_CLIENT_ID = N`:
  N             the stream, and only the stream. It never moves to another id (326 -> wait for N).
  N+1 .. N+9    helper clients: the batch's zero-line fetch, benchmarks, one-off tools. On 326 a helper moves
                to the next id of this range, never to N.
A second deployment on the same gateway takes an N at least 10 away (e.g. 10 and 20); the trader's bots
keep ids outside every such block.
"""

from __future__ import annotations

from v6_positions.config import Settings

HELPER_ID_COUNT = 9


def helper_client_ids(settings: Settings) -> tuple[int, ...]:
    first = settings.ib_client_id + 1
    return tuple(range(first, first + HELPER_ID_COUNT))


def helper_id_range(settings: Settings, first: int | None = None) -> tuple[int, int]:
    """(first id, count) of a helper session's range, starting at `first` (default N+1). Raises ValueError
    when that range would include the stream's id: a helper must never take it."""
    start = settings.ib_client_id + 1 if first is None else first
    stream = settings.ib_client_id
    if start <= stream < start + HELPER_ID_COUNT:
        raise ValueError(
            f"helper clientIds {start}..{start + HELPER_ID_COUNT - 1} include the stream's clientId {stream} "
            f"(V6_IB_CLIENT_ID): helpers use {stream + 1}..{stream + HELPER_ID_COUNT}"
        )
    return start, HELPER_ID_COUNT


class ClientIdRange:
    """Cycles through the configured clientIds; 326 moves on to the next one (helper clients only)."""

    def __init__(self, ids: tuple[int, ...]):
        if not ids:
            raise ValueError("client id range is empty")
        self._ids = ids
        self._index = 0

    @property
    def current(self) -> int:
        return self._ids[self._index]

    def advance(self) -> int:
        self._index = (self._index + 1) % len(self._ids)
        return self.current

    @property
    def wrapped(self) -> bool:
        """Back at the first id: every id of the range was tried."""
        return self._index == 0
