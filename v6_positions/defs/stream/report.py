"""What the stream run says about itself, at a bounded rate: run tags with every heartbeat (lines in use,
budget, connected, rotation bound: what the sensor and the checks read) and asset events every
`progress_interval_s` carrying the streamer's status as metadata. Never per tick.

Neither write may end the stream. A batch run can hold the SQLite event log's index in one long transaction,
and Dagster's SQLite storage then answers "database is locked" after 30 s; a run database can be briefly
unreachable. A failed write is logged and counted (the next report shows the counts), and the next one is
tried at its usual interval, counted from the end of the failed one. A progress round stops at its first
failed event, so a locked index holds up the op's loop (and with it the heartbeat, which lives in the run
database and still gets through) for one 30 s wait per round, well within the supervisor's 60 s staleness.
"""

from __future__ import annotations

import time

import dagster as dg

from v6_positions.defs.metadata import position_rows_frame, rows_markdown
from v6_positions.defs.resources import StreamSupervision
from v6_positions.defs.stream.heartbeat import (
    BUDGET_TAG,
    CONNECTED_TAG,
    LINES_TAG,
    ROTATION_BOUND_TAG,
    WORKER_TAG,
    worker_identity,
    write_heartbeat,
)
from v6_positions.defs.stream.thread import LatestRows
from v6_positions.ib.stream_status import StreamStatus
from v6_positions.lake.history import HistoryWriter


class StreamReporter:
    """Heartbeat every `heartbeat_interval_s`, asset events every `progress_interval_s`: never per tick."""

    def __init__(
        self,
        context: dg.OpExecutionContext,
        supervision: StreamSupervision,
        writer: HistoryWriter,
        latest: LatestRows,
    ) -> None:
        self.context = context
        self.supervision = supervision
        self.writer = writer
        self.latest = latest
        self.started = time.monotonic()
        self._next_beat = 0.0
        self._next_progress = self.started + supervision.progress_interval_s
        self._rows_reported = 0
        self._queue_rows_reported = 0
        self.heartbeats_failed = 0  # heartbeat tag writes the run storage refused
        self.reports_failed = 0  # progress rounds the event log refused

    def tick(self, status: StreamStatus | None) -> dg.DagsterRunStatus | None:
        """Heartbeat and progress when due; returns the run's recorded status when it was read."""
        now = time.monotonic()
        run_status = None
        if now >= self._next_beat:
            run_status = self.beat(status)
        if now >= self._next_progress:
            self.progress(status)
            # From the end of this round: a write that waited on a lock is not retried at once.
            self._next_progress = time.monotonic() + self.supervision.progress_interval_s
        return run_status

    def beat(self, status: StreamStatus | None) -> dg.DagsterRunStatus | None:
        """Stamp the heartbeat; returns the run's status as the instance records it (None if unreadable).

        A failed write (a locked or unreachable run database) is logged, not raised: the stream goes on, and
        if the supervisor judges the run dead meanwhile, the next readable status says so.
        """
        self._next_beat = time.monotonic() + self.supervision.heartbeat_interval_s
        if status is None:
            tags = {LINES_TAG: "0", CONNECTED_TAG: "false"}
        else:
            tags = {
                LINES_TAG: str(status.lines_in_use),
                BUDGET_TAG: str(status.line_budget),
                CONNECTED_TAG: str(status.connected).lower(),
                ROTATION_BOUND_TAG: _bound_tag(status),
            }
        try:
            write_heartbeat(self.context.instance, self.context.run_id, extra=tags)
            return self.run_status()
        except Exception as exc:  # the stream must outlive a slow or broken run database
            self.heartbeats_failed += 1
            self.context.log.warning(f"heartbeat not written (streaming on): {type(exc).__name__}: {exc}")
            return None

    def first_beat(self) -> dg.DagsterRunStatus:
        """Before connecting: say which process runs the op, then read the status (in that order, so a
        supervisor that fenced the run and then sees no worker stamp knows it will never connect)."""
        self._next_beat = time.monotonic() + self.supervision.heartbeat_interval_s
        write_heartbeat(
            self.context.instance,
            self.context.run_id,
            extra={WORKER_TAG: worker_identity(), LINES_TAG: "0", CONNECTED_TAG: "false"},
        )
        return self.run_status()

    def run_status(self) -> dg.DagsterRunStatus:
        run = self.context.instance.get_run_by_id(self.context.run_id)
        return run.status if run is not None else dg.DagsterRunStatus.STARTED

    def progress(self, status: StreamStatus | None) -> None:
        """Report the streamer's status as asset events and a log line. When the event log refuses them, say
        so and count it: the stream goes on, and the next round reports again."""
        try:
            self._report(status)
        except Exception as exc:  # a locked or unreachable event log must not end the stream
            self.reports_failed += 1
            retry_s = self.supervision.progress_interval_s
            self.context.log.warning(
                f"progress not reported (streaming on, next try in {retry_s:g}s): {type(exc).__name__}: {exc}"
            )

    def _report(self, status: StreamStatus | None) -> None:
        metadata = {
            **status_metadata(status, self.started),
            "heartbeats_failed": self.heartbeats_failed,
            "reports_failed": self.reports_failed,
        }
        rows = status.rows_flushed if status else 0
        queue_rows = status.queue_rows_written if status else 0
        # New rows committed -> a materialization; otherwise an observation keeps status visible.
        event = dg.AssetMaterialization if rows > self._rows_reported else dg.AssetObservation
        self.context.log_event(
            event(
                asset_key="streamed_positions",
                metadata={
                    **metadata,
                    "rows_since_last_report": rows - self._rows_reported,
                    "rows_buffered": self.writer.buffered,
                    "latest_rows": rows_markdown(position_rows_frame(self.latest.rows())),
                },
            )
        )
        self._rows_reported = rows
        if queue_rows > self._queue_rows_reported:
            self.context.log_event(
                dg.AssetMaterialization(
                    asset_key="position_queue",
                    metadata={
                        "queued_contracts": metadata.get("queued_contracts", 0),
                        "queue_rows_written": queue_rows,
                    },
                )
            )
            self._queue_rows_reported = queue_rows
        self.context.log.info(
            "stream: " + ", ".join(f"{k}={v}" for k, v in metadata.items() if k != "line_budget")
        )


def status_metadata(status: StreamStatus | None, started: float) -> dict[str, object]:
    if status is None:
        return {"connected": False, "uptime_s": round(time.monotonic() - started, 1)}
    lag = None
    if status.last_update_at is not None:
        lag = round(time.time() - status.last_update_at.timestamp(), 1)
    return {
        "connected": status.connected,
        "lines_in_use": status.lines_in_use,
        "line_budget": status.line_budget,
        "lines": f"{status.lines_in_use} / {status.line_budget}",
        "streamed_contracts": len(status.streamed_conids),
        "rows_flushed": status.rows_flushed,
        "queued_contracts": status.queued_count,
        "queue_rows_written": status.queue_rows_written,
        "queue_rows_rejected": status.queue_rows_rejected,  # refused by the queue's contract (logged)
        "queue_flush_errors": status.queue_flush_errors,  # failed queue commits (rows kept and retried)
        **_history_metadata(status),
        "unfit_active_legs": len(status.unfit),
        "demoted_legs": len(status.demoted),  # IB refused the contract (200/354); 101 never demotes
        "active_legs_not_held": len(status.legs_not_held),
        "ib_line_cap": status.line_cap,  # lines IB granted after a 101 (None: the budget applies)
        "rejections_101": status.rejections_101,
        "waiting_for_client_id": status.waiting_for_client_id,
        "ib_link_lost": status.link_lost,
        "competing_session_10197": status.competing_session,
        "unvalued_queued_holdings": status.valuations_missing,
        "registry_invalid_rows": status.registry_invalid_rows,
        "registry_unreadable": status.registry_error is not None,
        "reconnects": status.reconnects,
        "last_update_lag_s": lag,
        "uptime_s": round(time.monotonic() - started, 1),
        **_rotation_metadata(status),
        **_reconcile_metadata(status),
    }


def _reconcile_metadata(status: StreamStatus) -> dict[str, object]:
    """The last reconciliation of the book against IB's position list (at the stream's last connect)."""
    reconcile = status.reconcile
    if reconcile is None or reconcile.last_at is None:
        return {"last_reconciled_at": None}
    return {
        "last_reconciled_at": reconcile.last_at.isoformat(timespec="seconds"),
        "last_reconcile": reconcile.last_summary,
        "last_reconcile_fixed": reconcile.last_fixed,
        "reconcile_errors": reconcile.errors,
    }


def _history_metadata(status: StreamStatus) -> dict[str, object]:
    """What the streamed_positions writer holds and lost (a lake outage shows here first)."""
    history = status.history
    if history is None:
        return {}
    return {
        "history_rows_held": history.buffered,
        "history_rows_dropped": history.dropped,  # new contracts refused while the buffer was full
        "history_flush_errors": history.flush_errors,
    }


def _rotation_metadata(status: StreamStatus) -> dict[str, object]:
    """Legs beyond the long-lived lines rotate through a pool: each one's score and age."""
    rotation = status.rotation
    if rotation is None:
        return {"rotating_legs": 0}
    legs = sorted(status.rotation_legs, key=lambda leg: -leg.score)[:50]
    table = "| conid | risk score | age s | line |\n|---|---|---|---|\n" + "\n".join(
        f"| {leg.conid} | {leg.score:.1f} | {'-' if leg.age_s is None else f'{leg.age_s:.1f}'} | {leg.line} |"
        for leg in legs
    )
    return {
        "rotating_legs": rotation.overflow,
        "rotation_pool_lines": rotation.pool_lines,
        "rotation_bound_s": None if rotation.bound_s is None else round(rotation.bound_s, 1),
        "rotation_max_age_s": None if rotation.max_age_s is None else round(rotation.max_age_s, 1),
        "rotation_quote_latency_p95_s": round(rotation.latency_p95_s, 3),
        "rotation_legs": dg.MetadataValue.md(table),
    }


def _bound_tag(status: StreamStatus) -> str:
    bound = status.rotation.bound_s if status.rotation is not None else None
    return "" if bound is None else f"{bound:.1f}"
