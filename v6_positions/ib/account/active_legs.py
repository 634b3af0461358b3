"""The active legs the stream follows: the strategy registry, re-read whenever its table version moves.

An unreadable registry never stops the stream: the last known active legs are kept, the error reaches the
status, and the next poll reads the table in full again. Rows that break the table's contract are skipped
and counted, never guessed at.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from v6_positions.ib.periodic import stopped_within
from v6_positions.lake.registry import StrategyRegistry

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LegsStats:
    """The registry as the stream's status shows it."""

    error: str | None  # the last read failed: the last known active legs are kept
    invalid_rows: int  # rows skipped because they break the table's contract


class ActiveLegs:
    def __init__(
        self,
        registry: StrategyRegistry,
        poll_s: float,
        on_deactivated: Callable[[set[int]], None] = lambda conids: None,
    ) -> None:
        self.registry = registry
        self.poll_s = poll_s
        self._on_deactivated = on_deactivated  # told which legs left the active set
        self.conids: set[int] = set()
        self.error: str | None = None  # the last read failed: the last known active legs are kept
        self.invalid: list[object] = []  # rows breaking the table's contract: skipped, reported
        self._stale = False  # the last read failed: re-read in full on the next poll

    async def run(self, stop: asyncio.Event, on_change: Callable[[], None]) -> None:
        """Poll every `poll_s` until `stop`; `on_change` when the active set changed."""
        while not await stopped_within(stop, self.poll_s):
            try:
                if await self.refresh(force=self._stale):
                    on_change()
            except Exception as exc:
                self.failed(exc)

    def stats(self) -> LegsStats:
        return LegsStats(self.error, len(self.invalid))

    def failed(self, exc: Exception) -> None:
        first = self.error is None
        self.error = f"{type(exc).__name__}: {exc}"
        self._stale = True
        level = logging.WARNING if first else logging.DEBUG
        log.log(level, "strategy_registry unreadable (%s); keeping the last known %d active legs",
                self.error, len(self.conids), exc_info=first)

    async def refresh(self, *, force: bool) -> bool:
        """Re-read the active legs when the table version moved. True when the active set changed."""
        changed = await asyncio.to_thread(self.registry.refresh)
        if not changed and not force:
            return False
        legs = await asyncio.to_thread(self.registry.active_legs)
        invalid = await asyncio.to_thread(self.registry.invalid_rows)
        if [str(row) for row in invalid] != [str(row) for row in self.invalid] and invalid:
            log.warning("strategy_registry: %d invalid rows skipped (first: %s)", len(invalid), invalid[0])
        self.invalid = list(invalid)
        if self.error is not None:
            log.info("strategy_registry readable again")
        self.error, self._stale = None, False
        conids = [int(leg.conid) for leg in legs]
        duplicates = sorted(c for c, n in Counter(conids).items() if n > 1)
        if duplicates:
            log.warning("registry has duplicate active rows for conids %s; each is streamed once", duplicates)
        active = set(conids)
        if active == self.conids and not force:
            return False
        added, removed = active - self.conids, self.conids - active
        if removed:
            self._on_deactivated(removed)
        if added or removed:
            log.info("registry: %d active legs (+%s -%s)", len(active), sorted(added), sorted(removed))
        self.conids = active
        return True
