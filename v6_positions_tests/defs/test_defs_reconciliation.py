"""Reconciliation against the gateway simulator on a real instance: the book_matches_ib check fails while the
book differs from IB, repairs it (with the batch's help), passes after; an empty answer changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
from defs_helpers import apply_partitions, queue_tick
from deltalake import DeltaTable

from v6_positions.config import Settings
from v6_positions.definitions import build_definitions
from v6_positions.defs.batch.partition_keys import queued_contracts
from v6_positions.defs.batch.schedule import RANGE_END_TAG, RANGE_START_TAG
from v6_positions.defs.jobs import BATCH_JOB_NAME
from v6_positions.defs.reconciliation import RECONCILE_JOB_NAME
from v6_positions.defs.resources import StreamSupervision
from v6_positions.lake.positions import apply_to_positions, read_positions
from v6_positions.lake.rows import PositionRow
from v6_positions.simulator import SimulatorThread
from v6_positions.simulator.book_file import book_from_dict


def aged_row(account: str, conid: int, position: float, minutes_ago: float) -> PositionRow:
    when = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return PositionRow(account=account, conid=conid, symbol="SPY", position=position, source="batch",
                       event_time=when)  # fmt: skip


def _defs(lake_root: str, port: int) -> dg.Definitions:
    settings = Settings(lake_uri=lake_root, ib_port=port, flush_interval_s=0.5)
    return build_definitions(settings, StreamSupervision(heartbeat_interval_s=0.5, progress_interval_s=1.0))


def reconcile(defs: dg.Definitions, instance: dg.DagsterInstance) -> tuple[bool, dict[str, object]]:
    result = defs.resolve_job_def(RECONCILE_JOB_NAME).execute_in_process(instance=instance)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "book_matches_ib"
    return evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()}


def batch_everything_due(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    apply_partitions(instance, queue_tick(defs, instance))
    keys = instance.get_dynamic_partitions(queued_contracts.name)
    result = defs.resolve_job_def(BATCH_JOB_NAME).execute_in_process(
        instance=instance, tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}
    )
    assert result.success


def book(lake_root: str) -> dict[tuple[str, int], float]:
    frame = read_positions(lake_root)
    return {(a, c): p for a, c, p in frame.select("account", "conid", "position").iter_rows()}


def test_book_matches_ib_finds_drift_repairs_it_and_passes(sim, lake_root, instance):
    defs = _defs(lake_root, sim.port)
    held = {key: p.position for key, p in sim.book.positions.items() if p.position}

    passed, found = reconcile(defs, instance)  # an empty book: every position is missing
    assert not passed and found["missing"] == len(held) and found["requeued"] == len(held)
    batch_everything_due(defs, instance)
    passed, found = reconcile(defs, instance)
    assert passed, found["first_differences"]
    assert found["book_matches_ib"] == f"{len(held):,}/{len(held):,}" and book(lake_root) == held

    # Drift the book: a row lost, a size wrong, a position IB no longer holds.
    (lost, resized) = sorted(held)[:2]
    table = DeltaTable(f"{lake_root}/positions")
    table.delete(f"account = '{lost[0]}' AND conid = {lost[1]}")
    table.update(updates={"position": "999.0"}, predicate=f"conid = {resized[1]}")
    apply_to_positions(lake_root, [aged_row(lost[0], 424242, -4.0, 1)])

    passed, found = reconcile(defs, instance)
    assert not passed
    assert (found["missing"], found["wrong_size"], found["closed_but_open_in_book"]) == (1, 1, 1)
    assert "424242" in found["first_differences"]
    assert (lost[0], 424242) not in book(lake_root)  # the ghost's close is written at once
    batch_everything_due(defs, instance)  # the re-queued contracts, at top priority
    passed, found = reconcile(defs, instance)
    assert passed and book(lake_root) == held
    assert sim.stats()["max_lines_in_use"] == 0  # reconciliation and batch use no market-data line


def test_an_empty_answer_changes_nothing(lake_root, instance):
    """IB lists no position for the account (not synced yet, or another login): nothing is closed, and the
    check warns that it could not verify the book."""
    apply_to_positions(lake_root, [aged_row("DU1", c, 2.0, 1) for c in (1, 2, 3)])
    before = book(lake_root)
    empty = book_from_dict({"accounts": ["DU1"], "underlyings": [{"symbol": "SPY", "price": 500.0}],
                            "positions": []})  # fmt: skip
    with SimulatorThread(empty) as sim:
        passed, found = reconcile(_defs(lake_root, sim.port), instance)
    assert not passed and found["book_rows_not_verified"] == 3
    assert (found["missing"], found["wrong_size"], found["closed_but_open_in_book"]) == (0, 0, 0)
    assert book(lake_root) == before


def test_an_unreachable_gateway_changes_nothing(lake_root, instance):
    apply_to_positions(lake_root, [aged_row("DU1", 1, 2.0, 1)])
    passed, found = reconcile(_defs(lake_root, 1), instance)
    assert not passed and found["reconciled"] is False and "ConnectionError" in found["error"]
    assert book(lake_root) == {("DU1", 1): 2.0}
