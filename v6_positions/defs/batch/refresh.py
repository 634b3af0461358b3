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

from v6_positions.config import Settings
from v6_positions.defs.batch.partition_keys import contract_from_key
from v6_positions.ib.account.position_list import AccountNotManaged, PositionList
from v6_positions.ib.zero_line.position_fetch import ZeroLineFetch, fetch_positions_zero_line
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
    """Refresh the due contracts among `partition_keys`; commit their rows, then mark the queue.

    Raises AccountNotManaged (naming V6_IB_ACCOUNT) with nothing written or marked when the gateway's login
    does not manage the configured account."""
    wanted = {contract_from_key(key): key for key in partition_keys}
    queue = PositionQueue(settings.lake_uri, settings.lake_storage_options or None)
    due = queue.due(keys=wanted)
    as_read = {item.key: item.updated_at for item in due}  # only these exact rows may be marked
    outcome = BatchOutcome(requested=len(wanted), due=len(due))
    if not due:
        return outcome

    answer: ZeroLineFetch | None = None
    unvalued = {item.conid for item in due if item.position is None or item.payload_time is None}
    if fetch or unvalued:
        outcome.fetched = True
        conids = {item.conid for item in due} if fetch else unvalued
        try:
            answer = fetch_positions_zero_line(settings, batch_client_id, conids=conids)
        except AccountNotManaged:
            raise  # a wrong V6_IB_ACCOUNT must stop the run, not turn into rows
        except Exception as exc:  # gateway down: fall back to the queued payloads
            outcome.fetch_error = f"{type(exc).__name__}: {exc}"
            log.warning(f"zero-line fetch failed, using queued payloads where present: {outcome.fetch_error}")
    if answer is not None and answer.positions.unlisted_accounts():
        log.warning(
            "IB listed no position for account(s) "
            f"{', '.join(answer.positions.unlisted_accounts())}: not taken as closes (queued payloads used)"
        )

    fetched = {} if answer is None else {row.key: row for row in answer.rows}
    rows: list[PositionRow] = []
    for item in due:
        row, how = _row_for(item, fetched, None if answer is None else answer.positions)
        if row is None:
            fetch_error = outcome.fetch_error
            outcome.failed[item.key] = f"{how} (zero-line fetch: {fetch_error})" if fetch_error else how
            continue
        setattr(outcome, how, getattr(outcome, how) + 1)
        outcome.origins[item.key] = _ORIGIN[how]
        rows.append(row)

    write_rows(settings.lake_uri, "queued_positions", rows, settings.lake_storage_options or None)
    outcome.written = rows
    # Only now, with the rows committed, and only rows exactly as read: a contract re-queued since the read
    # (whatever time its writer stamped) stays pending for the next batch.
    queue.mark_done([(row.account, row.conid) for row in rows], as_read=as_read)
    by_error: dict[str, list[Key]] = {}
    for key, error in outcome.failed.items():
        by_error.setdefault(error, []).append(key)
    for error, keys in by_error.items():  # one MERGE per distinct error, not per contract
        queue.mark_failed(keys, error, as_read=as_read)
    outcome.committed_keys = {wanted[row.key]: row for row in rows}
    outcome.failed_keys = {wanted[key]: error for key, error in outcome.failed.items()}
    return outcome


def _row_for(
    item: QueueItem, fetched: dict[Key, PositionRow], answer: PositionList | None
) -> tuple[PositionRow | None, str]:
    """The row to write for a due item and where it came from (an outcome counter's name), or None and why
    not."""
    row = fetched.get(item.key)
    if row is not None:
        return dataclasses.replace(row, source=BATCH_SOURCE), "from_fetch"
    if answer is not None and answer.proves_closed(item.key):
        # IB's complete list for the contract's account lacks it: closed as of that answer.
        return item.observation(answer.answered_at, 0.0, BATCH_SOURCE), "closed"
    if item.position is None:
        return None, "no payload queued and no position fetched"
    if item.payload_time is None:
        # Without a valuation time the payload cannot be placed against newer rows of the book: written
        # as "now" it could blank a streamed row's prices or reopen a close. Retried until IB answers.
        return None, "queued payload has no valuation time and no zero-line answer covered it"
    return item.observation(item.payload_time, item.position, BATCH_SOURCE), "from_payload"
