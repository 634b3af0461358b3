"""The maintenance job compacts, checkpoints and vacuums every table that exists."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from v6_positions.config import Settings
from v6_positions.definitions import build_definitions
from v6_positions.lake.history import PositionRow, write_rows
from v6_positions.lake.tables import read_table


def test_maintenance_compacts_the_history_and_keeps_every_row(make_defs, instance, lake_root):
    now = datetime.now(UTC)
    for conid in range(1, 6):  # five commits, five small files
        write_rows(
            lake_root, "streamed_positions", [PositionRow("DU1", conid, "SPY", position=1.0, event_time=now)]
        )
    result = make_defs().resolve_job_def("lake_maintenance_job").execute_in_process(instance=instance)
    assert result.success
    messages = [e.message for e in instance.all_logs(result.run_id)]
    assert any(m.startswith("streamed_positions:") and "'files_after': 1" in m for m in messages)
    assert read_table(lake_root, "streamed_positions").height == 5


def test_maintenance_applies_the_history_retention_setting(instance, lake_root):
    # V6_HISTORY_RETENTION_DAYS reaches the scheduled maintenance: older date partitions go, recent ones stay.
    now = datetime.now(UTC)
    old = now - timedelta(days=10)
    write_rows(lake_root, "streamed_positions", [PositionRow("DU1", 1, "SPY", position=1.0, event_time=old)])
    write_rows(lake_root, "streamed_positions", [PositionRow("DU1", 2, "SPY", position=1.0, event_time=now)])
    defs = build_definitions(Settings(lake_uri=lake_root, history_retention_days=3))
    result = defs.resolve_job_def("lake_maintenance_job").execute_in_process(instance=instance)
    assert result.success
    assert read_table(lake_root, "streamed_positions")["conid"].to_list() == [2]
