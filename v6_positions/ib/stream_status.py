"""The stream's status: one snapshot record read by the status line (`commands/stream.py`), the Dagster op's
metadata and checks (`defs/stream/report.py`), the benchmarks and the tests.

Each owner reports its own part (`stats()`); `status_from_stats` only puts the parts together, so this module
knows the owners' stats records, never the owners nor the streamer that wires them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from v6_positions.ib.account.active_legs import LegsStats
from v6_positions.ib.account.book import AccountStats
from v6_positions.ib.account.connect_reconcile import ReconcileStats
from v6_positions.ib.connection.session import SessionStats
from v6_positions.ib.lines.allocation import AllocationStats
from v6_positions.ib.lines.ledger import LedgerStats
from v6_positions.ib.lines.pool import PoolStats
from v6_positions.ib.lines.stream_errors import StreamErrorStats
from v6_positions.ib.routing.rotation import LegStatus, RotationSummary
from v6_positions.ib.rows.handlers import DispatchStats
from v6_positions.ib.rows.queue_buffer import QueueStats
from v6_positions.ib.rows.sink import SinkStats
from v6_positions.ib.zero_line.valuation_sweep import SweepStats
from v6_positions.lake.history import WriterStats


@dataclass(slots=True)
class StreamStatus:
    connected: bool
    lines_in_use: int
    line_budget: int
    streamed_conids: list[int]
    queued_count: int
    rows_flushed: int
    reconnects: int
    demoted: dict[int, str]  # IB refused the contract (200/354); a 101 never demotes
    unfit: list[int]
    last_update_at: datetime | None
    # Detail for the status line, the Dagster checks and the tests.
    client_id: int = 0
    synced: bool = False
    updates_received: int = 0
    updates_dispatched: int = 0
    handler_errors: int = 0
    queue_rows_written: int = 0
    queue_commits: int = 0
    queue_rows_rejected: int = 0  # queue rows the table's contract refused (logged with the field)
    queue_flush_errors: int = 0  # failed queue commits (rows kept for the next flush)
    legs_not_held: list[int] = field(default_factory=list)
    # Sharing the gateway.
    line_cap: int | None = None  # lines IB granted after a 101 (None: never refused, the budget applies)
    rejections_101: int = 0
    probes: int = 0
    probes_won: int = 0
    waiting_for_client_id: bool = False  # the clientId is in use: waiting for it, holding no line
    client_id_waits: int = 0
    link_lost: bool = False  # 1100: the gateway lost IB; waiting for 1101/1102/farm OK
    competing_session: bool = False  # 10197: another login of this user takes the market data
    partial_data: dict[int, str] = field(default_factory=dict)  # 10090/10091 warnings per streamed conid
    accounts: list[str] = field(default_factory=list)
    # Zero-line valuations of queued holdings.
    valuation_sweeps: int = 0
    valuations_missing: int = 0  # in the last sweep: holdings IB gave no value for (logged by conid)
    # The registry.
    registry_error: str | None = None  # last read failed: the last known active legs are kept
    registry_invalid_rows: int = 0  # rows skipped because they break the table's contract
    # HistoryWriter.stats() of the streamed_positions writer, when it has one.
    history: WriterStats | None = None
    # Active legs beyond the long-lived lines rotate through a pool of lines (`lines/pool.py`); None when none
    # rotate.
    rotation: RotationSummary | None = None
    rotation_legs: list[LegStatus] = field(default_factory=list)  # per leg: score, role, line, age
    risk_scores: dict[int, float] = field(default_factory=dict)  # every streamable active leg's score
    # The book against IB's position list at each (re)connect (`account/connect_reconcile.py`).
    reconcile: ReconcileStats | None = None


def status_from_stats(
    *,
    session: SessionStats,
    account: AccountStats,
    legs: LegsStats,
    ledger: LedgerStats,
    allocation: AllocationStats,
    verdicts: StreamErrorStats,
    dispatch: DispatchStats,
    queue: QueueStats,
    sink: SinkStats,
    sweep: SweepStats,
    pool: PoolStats | None,  # None: the rotating pool is off
    reconcile: ReconcileStats,
) -> StreamStatus:
    """The snapshot from each owner's own stats."""
    return StreamStatus(
        connected=session.connected,
        lines_in_use=ledger.held,
        line_budget=ledger.configured,
        streamed_conids=allocation.streamed,
        queued_count=allocation.queued,
        rows_flushed=dispatch.rows_flushed,
        reconnects=session.reconnects,
        demoted=verdicts.demoted,
        unfit=allocation.unfit,
        last_update_at=sink.last_update_at,
        client_id=session.client_id,
        synced=account.synced,
        updates_received=dispatch.received,
        updates_dispatched=dispatch.dispatched,
        handler_errors=dispatch.errors,
        queue_rows_written=queue.rows_written,
        queue_commits=queue.commits,
        queue_rows_rejected=queue.rows_rejected,
        queue_flush_errors=queue.flush_errors,
        legs_not_held=allocation.legs_not_held,
        line_cap=ledger.cap,
        rejections_101=ledger.rejections,
        probes=ledger.probes,
        probes_won=ledger.probes_won,
        waiting_for_client_id=session.waiting_for_client_id,
        client_id_waits=session.client_id_waits,
        link_lost=session.link_lost,
        competing_session=verdicts.competing_session,
        partial_data=verdicts.partial_data,
        accounts=account.accounts,
        valuation_sweeps=sweep.sweeps,
        valuations_missing=len(sweep.last_missing),
        registry_error=legs.error,
        registry_invalid_rows=legs.invalid_rows,
        history=dispatch.history,
        rotation=pool.summary if pool is not None else None,
        rotation_legs=pool.legs if pool is not None else [],
        risk_scores=allocation.risk_scores,
        reconcile=reconcile,
    )
