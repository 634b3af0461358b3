"""A stream run on a busy SQLite instance: while another connection holds the event log's index and the run
database in write transactions (what a long batch of events does to the index), the stream keeps streaming,
says what it could not write, and reports again once the log is free."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from polling import wait_for

from v6_positions.commands.launch import register_demo_legs
from v6_positions.dagster_internals import dagster_sqlite_event_log
from v6_positions.defs.stream.heartbeat import GATEWAY_TAG, HEARTBEAT_TAG, STREAM_JOB_NAME
from v6_positions.lake.tables import read_table

STREAMED = dg.AssetKey("streamed_positions")


@contextmanager
def write_locked(*paths: Path) -> Iterator[None]:
    """Hold a write transaction on each SQLite file (BEGIN IMMEDIATE): every other writer waits, then fails
    with "database is locked"; readers go on (the files are in WAL mode)."""
    connections = []
    try:
        for path in paths:
            assert path.exists(), path
            conn = sqlite3.connect(path, isolation_level=None)
            connections.append(conn)
            conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        for conn in connections:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()


def run_log(instance: dg.DagsterInstance, run_id: str) -> str:
    """What the run logged so far; fails at once if the run ended (no point waiting for more)."""
    run = instance.get_run_by_id(run_id)
    assert run is not None and not run.is_finished, f"the stream run ended: {run and run.status}"
    return "\n".join(entry.user_message for entry in instance.all_logs(run_id))


def reports_in_index(instance: dg.DagsterInstance, run_id: str, after: float) -> list[dg.EventLogRecord]:
    """The run's streamed_positions reports newer than `after`, as the asset's page reads them (the index)."""
    found = [
        *instance.fetch_materializations(STREAMED, limit=200).records,
        *instance.fetch_observations(STREAMED, limit=200).records,
    ]
    return [r for r in found if r.run_id == run_id and r.timestamp > after]


def heartbeat(instance: dg.DagsterInstance, run_id: str) -> float:
    run = instance.get_run_by_id(run_id)
    return float(run.tags.get(HEARTBEAT_TAG, "0")) if run is not None else 0.0


@pytest.mark.timeout(120)
def test_a_stream_run_outlives_a_locked_event_log_and_reports_again_once_it_is_free(
    sim, make_defs, instance, lake_root, monkeypatch
):
    # Dagster's SQLite event log waits 30 s for a lock (a constant); a shorter wait shows the same failure in
    # well under a second. The run database keeps pysqlite's 5 s.
    monkeypatch.setattr(dagster_sqlite_event_log, "SQLITE_BUSY_TIMEOUT_SECONDS", 0.5)
    register_demo_legs(lake_root)
    gateway = f"127.0.0.1:{sim.port}"
    job = make_defs(sim.port).resolve_job_def(STREAM_JOB_NAME)
    results: list[dg.ExecuteInProcessResult] = []
    # Until terminated (below): the test's own pace decides when the run ends, never a duration.
    runner = threading.Thread(
        target=lambda: results.append(
            job.execute_in_process(instance=instance, tags={GATEWAY_TAG: gateway}, raise_on_error=False)
        ),
        daemon=True,
    )
    runner.start()
    run_id = ""
    try:
        run_id = wait_for(
            lambda: next(iter(r.run_id for r in instance.get_runs(dg.RunsFilter(job_name=STREAM_JOB_NAME)))),
            what="the stream run",
            tolerate=(StopIteration,),
        )
        wait_for(lambda: reports_in_index(instance, run_id, 0.0), timeout=30, what="a first progress report")

        history = Path(instance.root_directory) / "history"
        with write_locked(history / "runs" / "index.db", history / "runs.db"):
            locked_at = time.time()
            wait_for(
                lambda: "progress not reported" in run_log(instance, run_id)
                and "heartbeat not written" in run_log(instance, run_id),
                timeout=30,
                what="a refused progress report and a refused heartbeat, logged",
            )
            assert "database is locked" in run_log(instance, run_id)
            # Still streaming: rows keep reaching the lake while the instance refuses every write.
            rows = read_table(lake_root, "streamed_positions").height
            wait_for(
                lambda: read_table(lake_root, "streamed_positions").height > rows,
                timeout=15,
                what="streamed rows written while the event log is locked",
            )
            assert heartbeat(instance, run_id) < locked_at  # nothing got through
        freed_at = time.time()

        # Once free, the run beats and reports again, and its next report counts what it could not write.
        wait_for(lambda: heartbeat(instance, run_id) > freed_at, timeout=15, what="a heartbeat once free")
        (report, *_) = wait_for(
            lambda: reports_in_index(instance, run_id, freed_at), timeout=15, what="a report after the lock"
        )
        event = report.asset_materialization or report.asset_observation
        assert event is not None
        assert event.metadata["reports_failed"].value >= 1
        assert event.metadata["heartbeats_failed"].value >= 1
        assert event.metadata["connected"].value is True
    finally:
        if run_id:
            run = instance.get_run_by_id(run_id)
            if run is not None and not run.is_finished:
                instance.report_run_canceling(run, message="test over: stop streaming")
        runner.join(timeout=60)
    assert not runner.is_alive()
    (result,) = results
    # It ended because it was asked to (Dagster's interruption), not because a write failed.
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.CANCELED
    failures = [e.step_failure_data.error for e in result.all_events if e.is_step_failure]
    assert [error.cls_name for error in failures] == ["DagsterExecutionInterruptedError"]
