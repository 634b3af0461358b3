"""The code location loads: in-process and through the `dagster` CLI with the repo's workspace.yaml."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from v6_positions.definitions import defs

REPO = Path(__file__).resolve().parents[2]


def test_definitions_are_loadable():
    dg.Definitions.validate_loadable(defs)


def test_dagster_cli_validates_the_workspace():
    dagster = Path(sys.executable).with_name("dagster")
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_lineage_is_the_design_picture():
    graph = defs.resolve_asset_graph()
    parents = {
        key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
        for key in graph.get_all_asset_keys()
    }
    assert parents == {
        "strategy_registry": set(),
        "streamed_positions": {"strategy_registry"},
        "position_queue": set(),
        "queued_positions": {"position_queue"},
        "positions": {"streamed_positions", "queued_positions"},
        "strategy_risk": {"positions", "strategy_registry"},
        # the closes of underlyings nothing else prices: the model greeks of their queued options
        "underlying_closes": {"positions"},
        "underlying_risk": {"positions", "underlying_closes"},
        "book_eod": {"positions", "strategy_registry"},
    }
    checks = {key.name for key in graph.asset_check_keys}
    assert checks == {
        "lines_within_budget",
        "active_legs_fresh",
        "rotating_legs_within_bound",
        "queue_backlog_age",
        "registry_legs_held",
        "registry_rows_valid",
        "book_matches_ib",
        "strategy_legs_held_and_fresh",
        "risk_coverage",
        "strategy_risk_limits",
    }


def test_the_supervisor_and_the_schedules_are_on_by_default():
    assert defs.resolve_sensor_def("stream_supervisor").default_status == dg.DefaultSensorStatus.RUNNING
    batch = defs.resolve_schedule_def("queued_positions_batch")
    assert batch.cron_schedule == "* * * * *"
    assert batch.default_status == dg.DefaultScheduleStatus.RUNNING
    risk = defs.resolve_schedule_def("risk_refresh_every_minute")
    assert (risk.cron_schedule, risk.default_status) == ("* * * * *", dg.DefaultScheduleStatus.RUNNING)
    reconcile = defs.resolve_schedule_def("book_reconciliation_schedule")
    running = dg.DefaultScheduleStatus.RUNNING
    assert (reconcile.cron_schedule, reconcile.default_status) == ("*/5 * * * *", running)
    eod = defs.resolve_schedule_def("book_eod_at_close")
    assert (eod.cron_schedule, eod.execution_timezone) == ("20 16 * * 1-5", "America/New_York")
