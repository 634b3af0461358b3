"""Each asset check passes on a healthy lake and fails when its condition is broken."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
import pytest
from lake_helpers import enqueue

from v6_positions.defs.resources import HealthThresholds
from v6_positions.defs.stream.heartbeat import LINES_TAG
from v6_positions.lake.book_heal import refresh_positions
from v6_positions.lake.history import PositionRow, write_rows
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.registry import StrategyRegistry

GATEWAY = "127.0.0.1:4002"
ACCOUNT = "DU1000001"


def run_checks(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, dg.AssetCheckEvaluation]:
    result = defs.resolve_job_def("position_health_checks").execute_in_process(instance=instance)
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def healthy_lake(lake_root: str, *, age_s: float = 1.0) -> None:
    registry = StrategyRegistry(lake_root)
    now = datetime.now(UTC)
    rows = []
    for conid, right in ((11, "C"), (12, "P")):
        registry.add_active(conid, "SPY", right, 600.0, "20261218", 7)
        rows.append(
            PositionRow(
                ACCOUNT,
                conid,
                "SPY",
                "OPT",
                right,
                600.0,
                "20261218",
                position=-1.0,
                market_price=2.5,
                source="stream",
                event_time=now - timedelta(seconds=age_s),
            )
        )
    write_rows(lake_root, "streamed_positions", rows)
    refresh_positions(lake_root)


def test_every_check_passes_on_a_healthy_lake(make_defs, instance, lake_root, add_stream_run):
    healthy_lake(lake_root)
    run = add_stream_run(GATEWAY, heartbeat=time.time())
    instance.add_run_tags(run.run_id, {LINES_TAG: "2"})
    evaluations = run_checks(make_defs(), instance)
    assert {name: e.passed for name, e in evaluations.items()} == {
        "lines_within_budget": True,
        "active_legs_fresh": True,
        "rotating_legs_within_bound": True,
        "queue_backlog_age": True,
        "registry_legs_held": True,
        "registry_rows_valid": True,
    }
    assert evaluations["lines_within_budget"].metadata["lines_in_use"].value == 2


def test_lines_above_the_budget_fail(make_defs, instance, lake_root, add_stream_run):
    run = add_stream_run(GATEWAY, heartbeat=time.time())
    instance.add_run_tags(run.run_id, {LINES_TAG: "12"})
    assert run_checks(make_defs(max_lines=100), instance)["lines_within_budget"].passed
    failed = run_checks(make_defs(max_lines=5), instance)["lines_within_budget"]
    assert not failed.passed
    assert failed.severity == dg.AssetCheckSeverity.ERROR


def test_a_dead_stream_holds_no_lines(make_defs, instance, add_stream_run):
    run = add_stream_run(GATEWAY, heartbeat=time.time() - 3600)
    instance.add_run_tags(run.run_id, {LINES_TAG: "12"})
    assert run_checks(make_defs(max_lines=5), instance)["lines_within_budget"].passed


@pytest.mark.parametrize("age_s", [600, 2 * 86_400], ids=["10-min-old", "no-row-since-yesterday"])
def test_stale_active_legs_fail(make_defs, instance, lake_root, age_s):
    healthy_lake(lake_root, age_s=age_s)
    evaluation = run_checks(make_defs(thresholds=HealthThresholds(freshness_window_s=300)), instance)
    assert not evaluation["active_legs_fresh"].passed
    assert evaluation["active_legs_fresh"].metadata["stale_legs"].value == 2


def test_an_old_pending_queue_item_fails(make_defs, instance, lake_root):
    enqueue(PositionQueue(lake_root), 1001, "SPY", account=ACCOUNT, position=1.0)
    assert run_checks(make_defs(thresholds=HealthThresholds(max_queue_age_s=900)), instance)[
        "queue_backlog_age"
    ].passed
    evaluation = run_checks(make_defs(thresholds=HealthThresholds(max_queue_age_s=0)), instance)
    assert not evaluation["queue_backlog_age"].passed
    assert evaluation["queue_backlog_age"].metadata["pending"].value == 1


def test_an_active_leg_without_a_position_fails(make_defs, instance, lake_root):
    healthy_lake(lake_root)
    StrategyRegistry(lake_root).add_active(13, "QQQ", "C", 520.0, "20261218", 8)
    evaluation = run_checks(make_defs(), instance)["registry_legs_held"]
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "13" in evaluation.metadata["legs_not_held"].value


def test_a_bad_registry_row_fails_registry_rows_valid_and_names_it(make_defs, instance, lake_root):
    healthy_lake(lake_root)
    bad = (
        StrategyRegistry(lake_root)
        .all_legs()
        .head(1)
        .with_columns(pl.lit(99).alias("conid"), pl.lit("X").alias("right"), pl.lit("bot note").alias("note"))
    )
    bad.write_delta(
        f"{lake_root}/strategy_registry", mode="append", delta_write_options={"schema_mode": "merge"}
    )
    evaluations = run_checks(make_defs(), instance)
    evaluation = evaluations["registry_rows_valid"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["invalid_rows"].value == 1 and evaluation.metadata["valid_rows"].value == 2
    assert "conid 99: right='X'" in evaluation.metadata["invalid"].value
    assert evaluations["registry_legs_held"].passed  # the bad row is skipped, the good legs still judged


def test_a_registry_missing_a_required_column_fails_registry_rows_valid(make_defs, instance, lake_root):
    healthy_lake(lake_root)
    legs = StrategyRegistry(lake_root).all_legs().drop("active")
    legs.write_delta(
        f"{lake_root}/strategy_registry", mode="overwrite", delta_write_options={"schema_mode": "overwrite"}
    )
    # the other registry checks error out (they cannot read it); this one says why
    result = (
        make_defs()
        .resolve_job_def("position_health_checks")
        .execute_in_process(instance=instance, raise_on_error=False)
    )
    evaluation = {e.check_name: e for e in result.get_asset_check_evaluations()}["registry_rows_valid"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "missing required columns ['active']" in evaluation.metadata["schema_error"].value
