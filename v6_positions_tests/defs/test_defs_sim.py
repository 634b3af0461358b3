"""Against the gateway simulator, a temp lake and a real instance: stream, batch, book, checks."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest
from defs_helpers import apply_partitions, batch_requests, queue_tick, streamed_conids

from v6_positions.commands.launch import register_demo_legs
from v6_positions.defs.jobs import BATCH_JOB_NAME
from v6_positions.defs.stream.heartbeat import GATEWAY_TAG, HEARTBEAT_TAG, STREAM_JOB_NAME
from v6_positions.lake.positions import read_positions
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.tables import read_table
from v6_positions.simulator import load_book

STREAM_DURATION_S = 10.0  # a bounded stream run: long enough to connect, route and flush a few times


def stream_for_a_while(defs: dg.Definitions, instance: dg.DagsterInstance, gateway: str):
    return defs.resolve_job_def(STREAM_JOB_NAME).execute_in_process(
        instance=instance,
        run_config={"ops": {"stream_positions": {"config": {"duration_s": STREAM_DURATION_S}}}},
        tags={GATEWAY_TAG: gateway},
    )


def table_rows(markdown: dg.MetadataValue) -> int:
    """Data rows of a markdown table metadata value (header and separator excluded)."""
    return sum(1 for line in markdown.value.splitlines() if line.startswith("| ")) - 1


def check_results(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, bool]:
    result = defs.resolve_job_def("position_health_checks").execute_in_process(instance=instance)
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


@pytest.mark.timeout(120)
def test_stream_then_batch_then_book_and_checks(sim, make_defs, instance, lake_root):
    active = set(register_demo_legs(lake_root))
    defs = make_defs(sim.port)
    gateway = f"127.0.0.1:{sim.port}"

    # 1. A bounded stream run streams exactly the active legs and reports its line usage as it goes.
    result = stream_for_a_while(defs, instance, gateway)
    assert result.success
    assert streamed_conids(lake_root) == active
    progress = [
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("streamed_positions")
    ]
    peak = max(progress, key=lambda m: m["lines_in_use"].value)
    # What a trader reads on the asset while it streams: lines in use / budget, lag, and the newest rows.
    assert peak["lines"].value == f"{len(active)} / 100"
    assert peak["last_update_lag_s"].value is not None
    assert 0 < progress[-1]["rows_flushed"].value <= read_table(lake_root, "streamed_positions").height
    assert table_rows(progress[-1]["latest_rows"]) == min(10, len(active))
    assert HEARTBEAT_TAG in instance.get_run_by_id(result.run_id).tags

    # 2. Every other position was queued; the sensor turns each into a partition.
    queue = PositionQueue(lake_root)
    pending = queue.backlog().due
    assert pending > 0
    assert not {conid for _, conid in queue.keys()} & active
    supervised = queue_tick(defs, instance)
    added = apply_partitions(instance, supervised)
    assert len(added) == pending
    observed = {e.asset_key.to_user_string(): e.metadata for e in supervised.asset_events}
    # The first tick sees every queue row as changed, each a new contract.
    assert observed["position_queue"]["pending_among_changed"].value == pending
    assert observed["position_queue"]["new_contracts"].value == pending
    assert table_rows(observed["position_queue"]["latest_rows"]) == min(10, pending)
    assert observed["strategy_registry"]["active_legs"].value == len(active)
    assert table_rows(observed["strategy_registry"]["latest_active_legs"]) == min(10, len(active))

    # 3. The batch schedule asks for one range run; running it writes the rows and empties the queue.
    requests = batch_requests(defs, instance)
    assert len(requests) == 1
    result = defs.resolve_job_def(BATCH_JOB_NAME).execute_in_process(instance=instance, tags=requests[0].tags)
    assert result.success
    # One materialization per refreshed contract, each on its own partition.
    reported = instance.get_records_for_run(
        result.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    partitions = {r.event_log_entry.dagster_event.partition for r in reported} - {None}
    assert partitions == set(added)
    (summary,) = [
        r.event_log_entry.asset_materialization.metadata
        for r in reported
        if r.event_log_entry.asset_materialization.asset_key == dg.AssetKey("positions")
    ]
    # The stream is down now, so the run fetched with zero-line requests on its own clientId.
    assert summary["batch_from_zero_line_fetch"].value == pending
    assert queue.backlog().due == 0
    assert read_table(lake_root, "queued_positions").height == pending

    # 4. The book: one row per held contract, from both paths.
    book = read_positions(lake_root)
    held = {(p.account, p.contract.conid) for p in load_book("demo").positions.values() if p.position != 0}
    assert book.height == len(held)
    assert set(zip(book["account"].to_list(), book["conid"].to_list(), strict=True)) == held
    assert set(book.filter(pl.col("source") != "batch")["conid"].to_list()) == active
    rebuilt = summary
    assert rebuilt["rows"].value == book.height
    assert rebuilt["oldest_age_s"].value >= 0
    assert table_rows(rebuilt["latest_rows"]) == 10

    # 5. Every check passes on the result.
    assert all(check_results(defs, instance).values())
