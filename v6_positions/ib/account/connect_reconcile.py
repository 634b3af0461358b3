"""Reconciliation at every stream (re)connect: the book against the positions IB just listed.

The stream's connect waits for IB's complete position list (reqPositions up to positionEnd), so it holds
exactly what a reconciliation needs, at no extra request: the book is compared with it in a worker thread
while the stream goes on. Positions held but missing or wrongly sized are the stream's own work right after
a connect (it streams or queues every holding), so only ghosts are repaired here: book rows of positions that
closed while no stream was running, which nothing else would ever close. The same rules as the scheduled
reconciliation apply (`lake/reconcile.py`): only accounts the answer lists positions for are compared;
nothing is closed on an empty answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from ib_async import Position

from v6_positions.ib.account.position_list import AccountNotManaged, PositionList, broker_positions
from v6_positions.lake.reconcile import reconcile_book

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReconcileStats:
    """The last reconciliation as the status line and the stream run's metadata show it."""

    runs: int = 0
    errors: int = 0
    last_at: datetime | None = None  # when IB's answer was taken
    last_summary: str | None = None
    last_fixed: int = 0  # closes written + contracts re-queued by the last run
    fixed_total: int = 0


class ConnectReconciler:
    def __init__(self, root_uri: str, storage_options: dict[str, str] | None, account: str) -> None:
        self.root_uri = root_uri
        self.storage_options = storage_options
        self.account = account
        self._stats = ReconcileStats()
        self._task: asyncio.Task[None] | None = None

    def stats(self) -> ReconcileStats:
        return replace(self._stats)

    def start(self, positions: Iterable[Position], managed: list[str]) -> None:
        """Reconcile against this answer in the background (a run still going is left to finish first)."""
        if self._task is not None and not self._task.done():
            log.info("reconciliation still running; this connect's answer is skipped")
            return
        try:
            answer = PositionList.from_answer(positions, managed, self.account, datetime.now(UTC))
        except AccountNotManaged as exc:  # the streamer stops itself on this; nothing to reconcile
            log.error("not reconciled: %s", exc)
            return
        self._task = asyncio.ensure_future(self._run(answer))

    async def _run(self, answer: PositionList) -> None:
        try:
            broker = broker_positions(answer)
            outcome = await asyncio.to_thread(
                reconcile_book, self.root_uri, broker, self.storage_options, repair=("ghost",)
            )
        except Exception:  # the lake may be down: the next connect or the schedule reconciles
            self._stats.errors += 1
            log.exception("reconciliation at connect failed")
            return
        fixed = outcome.closes_written + outcome.requeued
        self._stats.runs += 1
        self._stats.last_at = outcome.answered_at
        self._stats.last_summary = outcome.summary()
        self._stats.last_fixed = fixed
        self._stats.fixed_total += fixed

    async def stop(self) -> None:
        """Let a running reconciliation finish (its writes are small and idempotent)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
