"""Helpers of the batch-path tests (defs/batch/ and instance/): queue rows with partitions, a range run, and
what the UI shows of it (partition status, per-partition metadata, the run's summary)."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

from v6_positions.defs.assets import SUMMARY_TAG_PREFIX
from v6_positions.defs.batch.partition_keys import contract_partition_key, queued_contracts
from v6_positions.defs.batch.schedule import RANGE_END_TAG, RANGE_START_TAG
from v6_positions.defs.jobs import BATCH_JOB_NAME
from v6_positions.lake.queue import PositionQueue

GATEWAY = "127.0.0.1:4002"
ACCOUNT = "DU1000001"


def queue_and_partition(
    lake_root: str, instance: dg.DagsterInstance, payloads: dict[int, float | None]
) -> list[str]:
    PositionQueue(lake_root).insert_many(
        {
            "account": ACCOUNT,
            "conid": conid,
            "symbol": "IWM",
            "right": "P",
            "strike": 200.0,
            "expiry": "20261218",
            "position": position,
            "market_price": 1.25 if position else None,
            # What the stream queues: IB's valuation with its time (a close is stamped when it happened).
            "payload_time": datetime.now(UTC) if position is not None else None,
        }
        for conid, position in payloads.items()
    )
    keys = [contract_partition_key(ACCOUNT, c, "IWM", "OPT", "P", 200.0, "20261218") for c in payloads]
    instance.add_dynamic_partitions(queued_contracts.name, keys)
    return keys


def materialize_range(defs: dg.Definitions, instance: dg.DagsterInstance, keys: list[str]):
    return defs.resolve_job_def(BATCH_JOB_NAME).execute_in_process(
        instance=instance,
        tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]},
        raise_on_error=False,
    )


def summary(instance: dg.DagsterInstance, result) -> dict[str, int]:
    """The run's batch figures, as the run's tags show them in the UI."""
    tags = instance.get_run_by_id(result.run_id).tags
    prefix = SUMMARY_TAG_PREFIX
    return {k.removeprefix(prefix): int(v) for k, v in tags.items() if k.startswith(prefix)}


def positions_metadata(instance: dg.DagsterInstance, result) -> dict[str, object]:
    event = instance.get_latest_materialization_event(dg.AssetKey("positions"))
    assert event is not None and event.run_id == result.run_id
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def partition_status(instance: dg.DagsterInstance) -> tuple[set[str], set[str]]:
    """(materialized, failed) partitions of queued_positions, as the UI computes them."""
    value = get_and_update_asset_status_cache_value(
        instance, dg.AssetKey("queued_positions"), queued_contracts, dynamic_partitions_loader=instance
    )
    if value is None:
        return set(), set()
    materialized = value.deserialize_materialized_partition_subsets(queued_contracts).get_partition_keys()
    failed = set(value.deserialize_failed_partition_subsets(queued_contracts).get_partition_keys())
    return set(materialized) - failed, failed


def run_materializations(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict[str, object]]:
    """queued_positions materializations written by one run: partition -> metadata."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    found = {}
    for record in records:
        event = record.event_log_entry.asset_materialization
        if event is not None and event.asset_key == dg.AssetKey("queued_positions"):
            assert event.partition not in found, f"{event.partition} reported twice"
            found[event.partition] = {k: v.value for k, v in event.metadata.items()}
    return found
