"""Against the gateway simulator, a temp lake and a real instance: stream, batch, book, checks."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import dagster as dg
import polars as pl
import pytest
from defs_helpers import apply_partitions, register_demo_legs, streamed_conids, tick, wait_for

from v6_positions.defs.heartbeat import GATEWAY_TAG, STREAM_JOB_NAME
from v6_positions.defs.jobs import BATCH_JOB_NAME
from v6_positions.defs.stream import LINES_TAG
from v6_positions.lake.positions import read_positions
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.tables import read_table
from v6_positions.simulator import load_book

STREAM_BOUND_S = 60.0  # the stream run's duration cap; the test cancels it as soon as it has what it needs


def stream_in_background(defs: dg.Definitions, instance: dg.DagsterInstance, gateway: str) -> dict:
    """Runs the stream job in-process on a thread; returns a dict that gets `result` when it ends."""
    box: dict = {}

    def run() -> None:
        box["result"] = defs.resolve_job_def(STREAM_JOB_NAME).execute_in_process(
            instance=instance,
            run_config={"ops": {"stream_positions": {"config": {"duration_s": STREAM_BOUND_S}}}},
            tags={GATEWAY_TAG: gateway},
            raise_on_error=False,
        )

    box["thread"] = threading.Thread(target=run, daemon=True)
    box["thread"].start()
    return box


def live_stream_run(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    runs = instance.get_runs(dg.RunsFilter(job_name=STREAM_JOB_NAME, statuses=[dg.DagsterRunStatus.STARTED]))
    return runs[0] if runs else None


def check_results(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, bool]:
    result = defs.resolve_job_def("position_health_checks").execute_in_process(instance=instance)
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


@pytest.mark.timeout(150)
def test_stream_then_batch_then_book_and_checks(sim, make_defs, instance, lake_root):
    active = register_demo_legs(lake_root)
    defs = make_defs(sim.port)
    gateway = f"127.0.0.1:{sim.port}"

    # 1. The stream run streams exactly the active legs, and says so in its run tags.
    box = stream_in_background(defs, instance, gateway)
    wait_for(lambda: streamed_conids(lake_root) >= active, 45, "every active leg in streamed_positions")
    run = wait_for(
        lambda: (r := live_stream_run(instance)) and r.tags.get(LINES_TAG) == str(len(active)) and r,
        15,
        "the heartbeat to report the lines in use",
    )
    assert streamed_conids(lake_root) == active

    # 2. While it streams: the line check passes under the real budget, fails below the active count.
    assert check_results(defs, instance)["lines_within_budget"]
    assert not check_results(make_defs(sim.port, max_lines=len(active) - 1), instance)["lines_within_budget"]

    # 3. Cancel: the run stops cleanly (flushes) and ends; nothing streamed is lost.
    flushed = read_table(lake_root, "streamed_positions").height
    instance.report_run_canceling(run)
    box["thread"].join(timeout=30)
    assert not box["thread"].is_alive()
    assert read_table(lake_root, "streamed_positions").height >= flushed
    materialized = [
        e
        for e in box["result"].get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("streamed_positions")
    ]
    assert materialized and materialized[-1].materialization.metadata["lines_in_use"].value >= 0

    # 4. Every other position was queued; the sensor turns each into a partition.
    queue = PositionQueue(lake_root)
    pending = queue.pending_count()
    assert pending > 0
    assert not {conid for _, conid in queue.keys()} & active
    added = apply_partitions(instance, tick(defs, instance))
    assert len(added) == pending

    # 5. The batch schedule asks for one range run; running it writes the rows and empties the queue.
    schedule = defs.resolve_schedule_def("queued_positions_batch")
    requests = schedule.evaluate_tick(
        dg.build_schedule_context(
            instance=instance, resources=defs.resources, scheduled_execution_time=datetime.now(UTC)
        )
    ).run_requests
    assert len(requests) == 1
    result = defs.resolve_job_def(BATCH_JOB_NAME).execute_in_process(instance=instance, tags=requests[0].tags)
    assert result.success
    batch = [
        e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("queued_positions")
    ]
    # The stream is down now, so the run fetched with zero-line requests on its own clientId.
    assert batch[-1].materialization.metadata["from_zero_line_fetch"].value == pending
    assert queue.pending_count() == 0
    assert read_table(lake_root, "queued_positions").height == pending

    # 6. The book: one row per held contract, from both paths.
    book = read_positions(lake_root)
    held = {(p.account, p.contract.conid) for p in load_book("demo").positions.values() if p.position != 0}
    assert book.height == len(held)
    assert set(zip(book["account"].to_list(), book["conid"].to_list(), strict=True)) == held
    assert set(book.filter(pl.col("source") != "batch")["conid"].to_list()) == active

    # 7. Every check passes on the result.
    assert all(check_results(defs, instance).values())
