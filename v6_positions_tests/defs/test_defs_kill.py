"""A stream run in a real process killed with SIGKILL: the next sensor tick marks it failed and relaunches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from defs_helpers import register_demo_legs, streamed_conids, tick, wait_for

from v6_positions.defs.heartbeat import STREAM_JOB_NAME
from v6_positions.defs.stream import LINES_TAG
from v6_positions.lake.tables import read_table

WORKER = Path(__file__).with_name("stream_worker.py")


def stream_run(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    runs = instance.get_runs(dg.RunsFilter(job_name=STREAM_JOB_NAME))
    return runs[0] if runs else None


def lines_check_passes(defs: dg.Definitions, instance: dg.DagsterInstance) -> bool:
    result = defs.resolve_job_def("position_health_checks").execute_in_process(instance=instance)
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "lines_within_budget"]
    assert evaluation.metadata["lines_in_use"].value > 0
    return evaluation.passed


@pytest.mark.timeout(150)
def test_killed_stream_run_is_failed_and_replaced_without_losing_rows(sim, make_defs, instance, lake_root):
    active = register_demo_legs(lake_root)
    env = {
        **os.environ,
        "DAGSTER_HOME": instance.root_directory,
        "V6_LAKE_URI": lake_root,
        "V6_IB_PORT": str(sim.port),
        "V6_FLUSH_INTERVAL_S": "0.5",
    }
    worker = subprocess.Popen(
        [sys.executable, str(WORKER)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        run = wait_for(
            lambda: (r := stream_run(instance)) and r.tags.get(LINES_TAG) == str(len(active)) and r,
            90,
            "the subprocess stream run to report its lines",
        )
        wait_for(lambda: streamed_conids(lake_root) >= active, 30, "every active leg flushed")
        # While it streams, the line check reads what the run reports: within the budget, and not within
        # a budget set below the active-leg count.
        assert lines_check_passes(make_defs(sim.port), instance)
        assert not lines_check_passes(make_defs(sim.port, max_lines=len(active) - 1), instance)
        flushed = read_table(lake_root, "streamed_positions")
    finally:
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
def test_terminated_stream_run_cancels_its_streams_and_flushes(sim, instance, lake_root):
    """What DefaultRunLauncher.terminate sends (SIGINT) reaches the op as an interrupt: a clean stop."""
    active = register_demo_legs(lake_root)
    env = {
        **os.environ,
        "DAGSTER_HOME": instance.root_directory,
        "V6_LAKE_URI": lake_root,
        "V6_IB_PORT": str(sim.port),
        "V6_FLUSH_INTERVAL_S": "0.5",
    }
    worker = subprocess.Popen(
        [sys.executable, str(WORKER)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        run = wait_for(
            lambda: (r := stream_run(instance)) and r.tags.get(LINES_TAG) == str(len(active)) and r,
            90,
            "the subprocess stream run to report its lines",
        )
        worker.send_signal(signal.SIGINT)
        assert worker.wait(timeout=60) is not None
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)

    stats = sim.stats()
    assert stats["cancel_count"] >= len(active)  # every stream cancelled, not just dropped with the socket
    assert stats["orders_received"] == 0
    wait_for(lambda: sim.stats()["lines_in_use"] == 0, 10, "the gateway to free the lines")
    messages = [e.message for e in instance.all_logs(run.run_id)]
    assert any("stopping the stream and flushing" in m for m in messages)
    assert instance.get_run_by_id(run.run_id).status in (
        dg.DagsterRunStatus.CANCELED,
        dg.DagsterRunStatus.FAILURE,
    )
    assert streamed_conids(lake_root) >= active
