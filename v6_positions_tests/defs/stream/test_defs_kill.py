"""A stream run in a real process, stopped the hard way (SIGKILL), the way a shutdown stops it, and frozen
long enough to be judged dead while it still holds the gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from defs_helpers import streamed_conids, tick
from polling import wait_for

from v6_positions.commands.launch import register_demo_legs
from v6_positions.defs.stream.heartbeat import LINES_TAG, RELEASED_TAG, STREAM_JOB_NAME
from v6_positions.lake.tables import open_table, read_table
from v6_positions.simulator import SimulatorThread

WORKER = Path(__file__).with_name("stream_worker.py")
_PROGRESS = {dg.DagsterEventType.ASSET_OBSERVATION, dg.DagsterEventType.ASSET_MATERIALIZATION}


@contextmanager
def stream_worker(
    sim: SimulatorThread, instance: dg.DagsterInstance, lake_root: str, flush_interval_s: float
) -> Iterator[subprocess.Popen]:
    """The stream job in its own process (as a run worker), on the test instance; killed if still alive."""
    env = {
        **os.environ,
        "DAGSTER_HOME": instance.root_directory,
        "V6_LAKE_URI": lake_root,
        "V6_IB_PORT": str(sim.port),
        "V6_FLUSH_INTERVAL_S": str(flush_interval_s),
    }
    log_path = Path(instance.root_directory) / f"stream-worker-{uuid.uuid4().hex[:8]}.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, str(WORKER)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield worker
    except AssertionError as failure:  # say what the worker said, not only what the test waited for
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise AssertionError(f"{failure}\n--- stream worker log (tail) ---\n{tail}") from None
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)


def streaming_run(
    instance: dg.DagsterInstance, lines: int, other_than: str | None = None
) -> dg.DagsterRun | None:
    """The newest stream run (other than run `other_than`), once it reports holding `lines` streams."""
    runs = [r for r in instance.get_runs(dg.RunsFilter(job_name=STREAM_JOB_NAME)) if r.run_id != other_than]
    return runs[0] if runs and runs[0].tags.get(LINES_TAG) == str(lines) else None


def freeze(worker: subprocess.Popen, instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """SIGSTOP the worker, at a moment it holds no lock of the instance's SQLite files (else the supervisor
    could not write either, which is not the case under test): retried until the probe writes go through."""
    probe = instance.add_run(dg.DagsterRun(job_name="v6_test_probe", run_id=str(uuid.uuid4())))
    for _ in range(10):
        worker.send_signal(signal.SIGSTOP)
        try:
            probe_writes(instance, run, probe)
            return
        except Exception:  # noqa: BLE001 - frozen inside a transaction: let it finish and try again
            worker.send_signal(signal.SIGCONT)
            probe_writes(instance, run, probe)  # waits for the worker's transaction to end
    raise AssertionError("the worker always held a lock of the instance when frozen")


def probe_writes(instance: dg.DagsterInstance, run: dg.DagsterRun, probe: dg.DagsterRun) -> None:
    """Write where marking `run` failed writes: its event log, the run storage and the cross-run index."""
    instance.report_engine_event("probe write by the test", run)
    instance.report_run_canceled(probe)


def stream_progress(instance: dg.DagsterInstance, run_id: str) -> dict[str, object]:
    """Metadata of the run's newest streamed_positions progress event."""
    for record in reversed(instance.all_logs(run_id, of_type=_PROGRESS)):
        event = record.asset_materialization or record.asset_observation
        if event is not None and event.asset_key == dg.AssetKey("streamed_positions"):
            return {key: value.value for key, value in event.metadata.items()}
    return {}


def lines_check_passes(defs: dg.Definitions, instance: dg.DagsterInstance) -> bool:
    result = defs.resolve_job_def("position_health_checks").execute_in_process(instance=instance)
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "lines_within_budget"]
    assert evaluation.metadata["lines_in_use"].value > 0
    return evaluation.passed


@pytest.mark.timeout(150)
def test_killed_stream_run_is_failed_and_replaced_without_losing_rows(sim, make_defs, instance, lake_root):
    active = set(register_demo_legs(lake_root))
    with stream_worker(sim, instance, lake_root, flush_interval_s=0.5) as worker:
        run = wait_for(lambda: streaming_run(instance, len(active)), 90, "the stream run to report its lines")
        wait_for(lambda: streamed_conids(lake_root) >= active, 30, "every active leg flushed")
        # While it streams, the line check reads what the run reports: within the budget, and not within
        # a budget set below the active-leg count.
        assert lines_check_passes(make_defs(sim.port), instance)
        assert not lines_check_passes(make_defs(sim.port, max_lines=len(active) - 1), instance)
        flushed = read_table(lake_root, "streamed_positions")
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)

    # The default run launcher would never notice: the run still says STARTED.
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    defs = make_defs(sim.port, stale_after_s=2.0)

    def next_tick_replaces_it() -> dg.SensorResult | None:
        result = tick(defs, instance)
        return result if result.run_requests else None

    result = wait_for(next_tick_replaces_it, 30, "a sensor tick to judge the heartbeat stale")
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert len(result.run_requests) == 1
    # Everything committed before the kill is still there, and the table reads cleanly.
    after = read_table(lake_root, "streamed_positions")
    assert after.height >= flushed.height
    assert set(after["conid"].unique().to_list()) >= set(flushed["conid"].unique().to_list()) >= active


@pytest.mark.timeout(150)
def test_a_shutdown_flushes_every_buffered_row_and_cancels_the_run(sim, instance, lake_root):
    """Ctrl-C on `make demo` signals every process of `dagster dev` at once, so the run worker may get
    SIGINT and SIGTERM back to back (Dagster's "Terminate" sends SIGINT alone): one clean stop either way."""
    active = set(register_demo_legs(lake_root))
    # No flush falls due while streaming: every row the run received is still in its buffer at the signal.
    with stream_worker(sim, instance, lake_root, flush_interval_s=3600) as worker:
        run = wait_for(lambda: streaming_run(instance, len(active)), 90, "the stream run to report its lines")
        buffered = wait_for(
            lambda: (
                stream_progress(instance, run.run_id).get("rows_buffered", 0) >= len(active)
                and stream_progress(instance, run.run_id)["rows_buffered"]
            ),
            30,
            "rows of every active leg to be buffered",
        )
        assert open_table(lake_root, "streamed_positions") is None  # nothing committed yet
        worker.send_signal(signal.SIGINT)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)

    stats = sim.stats()
    assert stats["cancel_count"] >= len(active)  # every stream cancelled, not just dropped with the socket
    assert stats["orders_received"] == 0
    wait_for(lambda: sim.stats()["lines_in_use"] == 0, 10, "the gateway to free the lines")
    flushed = read_table(lake_root, "streamed_positions")
    assert flushed.height >= buffered
    assert set(flushed["conid"].unique().to_list()) == active
    assert stream_progress(instance, run.run_id)["rows_flushed"] == flushed.height
    stopped = instance.get_run_by_id(run.run_id)
    assert stopped.status == dg.DagsterRunStatus.CANCELED
    messages = [e.message for e in instance.all_logs(run.run_id)]
    assert any("stopping the stream and flushing" in m for m in messages)


@pytest.mark.timeout(180)
def test_a_run_wrongly_judged_dead_lets_go_before_its_replacement_streams(
    sim, make_defs, instance, lake_root
):
    """Frozen (a stuck heartbeat write, a long lock), the run is judged dead while its socket still holds its
    lines. Its replacement is requested only after it woke up, read that it was failed, and let go: the
    simulator never sees the two runs' lines at the same time."""
    active = set(register_demo_legs(lake_root))
    defs = make_defs(sim.port, stale_after_s=2.0, restart_backoff_s=0)
    with stream_worker(sim, instance, lake_root, flush_interval_s=0.5) as first:
        old = wait_for(lambda: streaming_run(instance, len(active)), 90, "the stream run to report its lines")
        freeze(first, instance, old)

        def judged_dead() -> bool:
            assert not tick(defs, instance).run_requests, "replaced while the old run holds its lines"
            return instance.get_run_by_id(old.run_id).status == dg.DagsterRunStatus.FAILURE

        wait_for(judged_dead, 30, "the frozen run to be judged dead")
        assert not tick(defs, instance).run_requests
        assert sim.stats()["lines_in_use"] == len(active)  # it really still holds them

        first.send_signal(signal.SIGCONT)
        result = wait_for(
            lambda: (r := tick(defs, instance)).run_requests and r, 60, "the replacement to be requested"
        )
        assert len(result.run_requests) == 1
        assert instance.get_run_by_id(old.run_id).tags[RELEASED_TAG] == old.run_id
        assert first.wait(timeout=60) == 1  # it failed, by its own hand, once it let go

    messages = [e.message for e in instance.all_logs(old.run_id)]
    assert any("FAILURE in the instance: stopping the stream" in m for m in messages)
    with stream_worker(sim, instance, lake_root, flush_interval_s=0.5):  # the replacement
        wait_for(lambda: streaming_run(instance, len(active), other_than=old.run_id), 90, "the replacement")
    assert sim.stats()["max_lines_in_use"] == len(active)
