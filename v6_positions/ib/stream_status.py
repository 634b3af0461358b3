"""The stream's status: one snapshot record read by the status line (`cli.py`), the Dagster op's metadata
and checks (`defs/stream.py`), the benchmarks and the tests; built from the owners of each part."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from v6_positions.ib.account.connect_reconcile import ReconcileStats
from v6_positions.ib.routing.rotation import LegStatus, RotationSummary
from v6_positions.lake.history import WriterStats

if TYPE_CHECKING:
    from v6_positions.ib.streamer import PositionStreamer


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
    # Active legs that do not fit rotate through a pool of lines (issue 12); None when none rotate.
    rotation: RotationSummary | None = None
    rotation_legs: list[LegStatus] = field(default_factory=list)  # per leg: score, role, line, age
    risk_scores: dict[int, float] = field(default_factory=dict)  # every streamable active leg's score
    # The book against IB's position list at each (re)connect (reconcile_on_connect.py).
    reconcile: ReconcileStats | None = None


def collect_status(streamer: PositionStreamer) -> StreamStatus:
    lines = streamer.lines
    sweep = streamer.valuations.stats
    session, allocation, dispatcher, queue = (
        streamer.session, streamer.allocation, streamer.dispatcher, streamer.queue_buffer
    )
    writer_stats = None
    for handler in dispatcher.handlers:
        stats = getattr(getattr(handler, "writer", None), "stats", None)
        if callable(stats):
            writer_stats = stats()
            break
    reports = allocation.reports.values()
    rotator = streamer.rotator
    rotating = rotator is not None and bool(rotator.scheduler.legs)
    return StreamStatus(
        connected=session.connected,
        lines_in_use=allocation.lines_held(),
        line_budget=allocation.budget,
        streamed_conids=sorted(streamer.subs.live),
        queued_count=len(allocation.queued),
        rows_flushed=sum(int(getattr(h, "rows_flushed", 0)) for h in dispatcher.handlers),
        reconnects=session.reconnects,
        demoted=dict(allocation.demoted),
        unfit=sorted(r.conid for r in reports if r.kind == "over_budget"),
        last_update_at=streamer.sink.last_update_at,
        client_id=session.client_id,
        synced=streamer.synced,
        updates_received=dispatcher.received,
        updates_dispatched=dispatcher.dispatched,
        handler_errors=dispatcher.errors,
        queue_rows_written=queue.rows_written,
        queue_commits=queue.commits,
        queue_rows_rejected=queue.rows_rejected,
        queue_flush_errors=queue.flush_errors,
        legs_not_held=sorted(r.conid for r in reports if r.kind == "leg_not_held"),
        line_cap=lines.cap,
        rejections_101=lines.rejections,
        probes=lines.probes,
        probes_won=lines.probes_won,
        waiting_for_client_id=session.waiting_for_client_id,
        client_id_waits=session.client_id_waits,
        link_lost=session.link_lost,
        competing_session=streamer.stream_errors.competing_session,
        partial_data=dict(streamer.stream_errors.partial_data),
        accounts=streamer.account.accounts(),
        valuation_sweeps=sweep.sweeps,
        valuations_missing=len(sweep.last_missing),
        registry_error=streamer.legs.error,
        registry_invalid_rows=len(streamer.legs.invalid),
        history=writer_stats,
        rotation=rotator.scheduler.summary() if rotator is not None and rotating else None,
        rotation_legs=rotator.scheduler.status() if rotator is not None else [],
        risk_scores=dict(streamer.ranking.scores),
        reconcile=dataclasses.replace(streamer.reconciler.stats),
    )
