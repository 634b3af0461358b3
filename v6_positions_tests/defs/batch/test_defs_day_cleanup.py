"""Bounded growth: the hourly clean-up removes partitions and queue rows of closed or expired contracts."""

from __future__ import annotations

import dagster as dg
import pytest

from v6_positions.defs.batch.partition_keys import contract_partition_key, queued_contracts
from v6_positions.lake.queue import PositionQueue

ACCOUNT = "DU1000001"


def queue(
    lake_root: str, instance: dg.DagsterInstance, contracts: dict[int, tuple[str, float]]
) -> dict[int, str]:
    """Queue contracts {conid: (expiry, position)} and add their partitions; returns conid -> key."""
    PositionQueue(lake_root).insert_many(
        {
            "account": ACCOUNT,
            "conid": conid,
            "symbol": "SPY",
            "right": "C",
            "strike": 600.0,
            "expiry": expiry,
            "position": position,
        }
        for conid, (expiry, position) in contracts.items()
    )
    keys = {
        c: contract_partition_key(ACCOUNT, c, "SPY", "OPT", "C", 600.0, e) for c, (e, _) in contracts.items()
    }
    instance.add_dynamic_partitions(queued_contracts.name, list(keys.values()))
    return keys


def run_cleanup(defs: dg.Definitions, instance: dg.DagsterInstance, today: str) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("queue_cleanup_job")
    config = {"ops": {"remove_closed_and_expired": {"config": {"today": today}}}}
    result = job.execute_in_process(instance=instance, run_config=config)
    assert result.success
    return result


@pytest.mark.both_storages
def test_closed_and_expired_contracts_lose_partition_and_queue_row(make_defs, instance, lake_root):
    keys = queue(
        lake_root,
        instance,
        {
            1: ("20261218", 2.0),  # open, not expired: kept
            2: ("20261218", 0.0),  # closed, and the batch has written it (done): removed
            3: ("20261120", 1.0),  # expired last week: removed even though still pending
            4: ("20261218", 0.0),  # closed but not yet refreshed by a batch (pending): kept until done
            5: ("20261127", 1.0),  # expires today: kept
        },
    )
    q = PositionQueue(lake_root)
    q.mark_done([(ACCOUNT, 1), (ACCOUNT, 2)])
    orphan = contract_partition_key(ACCOUNT, 99, "SPY", "OPT", "C", 600.0, "20261218")
    instance.add_dynamic_partitions(queued_contracts.name, [orphan])  # its queue row is gone

    result = run_cleanup(make_defs(), instance, today="20261127")

    assert sorted(instance.get_dynamic_partitions(queued_contracts.name)) == sorted(
        [keys[1], keys[4], keys[5]]
    )
    assert q.keys() == [(ACCOUNT, 1), (ACCOUNT, 4), (ACCOUNT, 5)]
    (output,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
    metadata = {k: v.value for k, v in output.step_output_data.metadata.items()}
    assert metadata == {
        "closed_or_expired_contracts": 2,
        "partitions_removed": 3,
        "orphan_partitions_removed": 1,
        "queue_rows_removed": 2,
    }
    # Nothing left to do: a second run removes nothing.
    run_cleanup(make_defs(), instance, today="20261127")
    assert len(instance.get_dynamic_partitions(queued_contracts.name)) == 3


def test_the_cleanup_runs_on_a_schedule_the_ui_shows_running(make_defs):
    schedule = make_defs().resolve_schedule_def("queued_positions_cleanup")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "queue_cleanup_job"
    assert schedule.cron_schedule == "7 * * * *"
