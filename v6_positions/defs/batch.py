"""The batch path behind `queued_positions`: turn due queue rows into history rows, zero streaming lines.

Payloads the stream queued are used as they are. When the stream is down (payloads would be stale) or a
payload is missing, the positions are fetched with zero-line requests (reqPositions + reqPnLSingle) on the
batch clientId. Queue rows are marked done only after their rows are committed to `queued_positions`
(whose write also merges them into the `positions` book). The outcome says, per partition key, what was
committed and what failed, so the asset reports exactly those partitions.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from v6_positions.config import Settings
from v6_positions.defs.partitions import contract_from_key
from v6_positions.ib.batch import fetch_positions_zero_line
from v6_positions.lake.history import write_rows
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.rows import Key, PositionRow, QueueItem

BATCH_SOURCE = "batch"
_ORIGIN = {"from_payload": "queued payload", "from_fetch": "zero-line fetch", "closed": "closed"}


@dataclass(slots=True)
class BatchOutcome:
    requested: int = 0  # partition keys in the run
    due: int = 0  # of those, queue rows that were pending (or failed and retryable)
    written: list[PositionRow] = field(default_factory=list)
    # partition key of every written row / failed contract (bridged keys that were not due appear in neither)
    committed_keys: dict[str, PositionRow] = field(default_factory=dict)
    failed_keys: dict[str, str] = field(default_factory=dict)
    origins: dict[Key, str] = field(default_factory=dict)  # where each written row came from (_ORIGIN)
    from_payload: int = 0
    from_fetch: int = 0
    closed: int = 0  # due contracts the account no longer holds (written with position 0)
    failed: dict[Key, str] = field(default_factory=dict)
    fetch_error: str | None = None
    fetched: bool = False


def refresh_contracts(
    settings: Settings,
    partition_keys: Iterable[str],
    *,
    fetch: bool,
    batch_client_id: int,
    log: logging.Logger | logging.LoggerAdapter,
) -> BatchOutcome:
    """Refresh the due contracts among `partition_keys`; commit their rows, then mark the queue."""
    wanted = {contract_from_key(key): key for key in partition_keys}
    queue = PositionQueue(settings.lake_uri, settings.lake_storage_options or None)
    read_at = datetime.now(UTC)
    due = queue.due(keys=wanted)
    outcome = BatchOutcome(requested=len(wanted), due=len(due))
    if not due:
        return outcome

    fetched: dict[Key, PositionRow] | None = None
    if fetch or any(item.position is None for item in due):
        outcome.fetched = True
        try:
            fetched = _fetch_zero_line(settings, batch_client_id, {item.conid for item in due})
        except Exception as exc:  # gateway down: fall back to the queued payloads
            outcome.fetch_error = f"{type(exc).__name__}: {exc}"
            log.warning(f"zero-line fetch failed, using queued payloads where present: {outcome.fetch_error}")

    held_accounts = None if fetched is None else {account for account, _ in fetched}
    rows: list[PositionRow] = []
    for item in due:
        row, how = _row_for(item, fetched, held_accounts, read_at)
        if row is None:
            outcome.failed[item.key] = outcome.fetch_error or "no payload queued and no position fetched"
            continue
        setattr(outcome, how, getattr(outcome, how) + 1)
        outcome.origins[item.key] = _ORIGIN[how]
        rows.append(row)

    write_rows(settings.lake_uri, "queued_positions", rows, settings.lake_storage_options or None)
    outcome.written = rows
    # Only now, with the rows committed: a contract re-queued since we read the queue stays pending.
    queue.mark_done([(row.account, row.conid) for row in rows], updated_before=read_at)
    by_error: dict[str, list[Key]] = {}
    for key, error in outcome.failed.items():
        by_error.setdefault(error, []).append(key)
    for error, keys in by_error.items():  # one MERGE per distinct error, not per contract
        queue.mark_failed(keys, error, updated_before=read_at)
    outcome.committed_keys = {wanted[row.key]: row for row in rows}
    outcome.failed_keys = {wanted[key]: error for key, error in outcome.failed.items()}
    return outcome


def _row_for(
    item: QueueItem, fetched: dict[Key, PositionRow] | None, held_accounts: set[str] | None, read_at: datetime
) -> tuple[PositionRow | None, str]:
    """The row to write for a due item and where it came from (an outcome counter's name)."""
    if fetched is not None:
        row = fetched.get(item.key)
        if row is not None:
            return dataclasses.replace(row, source=BATCH_SOURCE), "from_fetch"
        if not fetched or item.account in (held_accounts or ()):
            # The account's full position list came back without this contract: it is closed.
            return item.observation(read_at, 0.0, BATCH_SOURCE), "closed"
    if item.position is None:
        return None, "failed"
    return item.observation(item.payload_time or read_at, item.position, BATCH_SOURCE), "from_payload"


def _fetch_zero_line(settings: Settings, client_id: int, conids: set[int]) -> dict[Key, PositionRow]:
    # Only the due contracts get a reqPnLSingle; reqPositions still lists the whole account, so a due
    # contract missing from the answer is known to be closed.
    return {row.key: row for row in fetch_positions_zero_line(settings, client_id, conids=conids)}
