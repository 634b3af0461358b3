"""The queue sensor: turns new position_queue keys into `queued_positions` partitions.

Kept apart from the stream supervisor so a broken or slow lake never stops stream supervision. It also
observes the registry and queue tables (versions, counts) for the UI. It never talks to IB.
"""

import json
import time
from dataclasses import asdict, dataclass

import dagster as dg
import polars as pl

from v6_positions.defs.metadata import QUEUE_COLUMNS, REGISTRY_COLUMNS, rows_markdown
from v6_positions.defs.partitions import contract_from_key, contract_partition_key, queued_contracts
from v6_positions.defs.resources import LakeResource
from v6_positions.lake.queue import PENDING
from v6_positions.lake.registry import StrategyRegistry
from v6_positions.lake.tables import read_table, table_version

# The recommended ceiling of partition additions per evaluation; the rest waits for the next tick.
MAX_NEW_PARTITIONS_PER_TICK = 25_000


@dataclass
class QueueCursor:
    queue_version: int = -1  # position_queue version whose keys are all partitions already
    registry_version: int = -1  # strategy_registry version last observed

    @classmethod
    def parse(cls, raw: str | None) -> "QueueCursor":
        if not raw:
            return cls()
        try:
            return cls(**{k: int(v) for k, v in json.loads(raw).items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError, AttributeError):
            return cls()  # an unreadable cursor only costs one full re-read

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dg.sensor(
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a queued_positions partition for every new position_queue key, and observes the "
    "registry and queue tables.",
)
def queue_partitions(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
    cursor = QueueCursor.parse(context.cursor)
    partition_requests, queue_events = _new_queue_partitions(context, lake, cursor)
    registry_events = _observe_registry(lake, cursor)
    return dg.SensorResult(
        dynamic_partitions_requests=partition_requests,
        asset_events=registry_events + queue_events,
        cursor=cursor.dump(),
    )


def _new_queue_partitions(
    context: dg.SensorEvaluationContext, lake: LakeResource, cursor: QueueCursor
) -> tuple[list[dg.AddDynamicPartitionsRequest], list[dg.AssetObservation]]:
    version = table_version(lake.root_uri, "position_queue", lake.storage_options)
    if version == cursor.queue_version:
        return [], []
    queue = read_table(lake.root_uri, "position_queue", lake.storage_options)
    existing = context.instance.get_dynamic_partitions(queued_contracts.name)
    new_keys = new_partition_keys(queue, existing)
    if len(new_keys) > MAX_NEW_PARTITIONS_PER_TICK:
        new_keys = new_keys[:MAX_NEW_PARTITIONS_PER_TICK]  # cursor not advanced: the rest come next tick
    else:
        cursor.queue_version = version
    observation = dg.AssetObservation(asset_key="position_queue", metadata=_queue_metadata(queue, version))
    if new_keys:
        context.log.info(f"adding {len(new_keys)} queued_positions partitions (queue version {version})")
        return [queued_contracts.build_add_request(new_keys)], [observation]
    return [], [observation]


def new_partition_keys(queue: pl.DataFrame, existing: list[str] | tuple[str, ...]) -> list[str]:
    """Keys of queued contracts that have no partition yet, most urgent and oldest first.

    Contracts are matched by (account, conid), not by the whole key, so a contract whose descriptive fields
    changed keeps its first partition instead of getting a second one.
    """
    have = set()
    for key in existing:
        try:
            have.add(contract_from_key(key))
        except ValueError:
            continue
    keys: list[str] = []
    ordered = queue.sort(["priority", "queued_at", "account", "conid"], nulls_last=True)
    for row in ordered.select(
        "account", "conid", "symbol", "sec_type", "right", "strike", "expiry"
    ).iter_rows():
        account, conid, symbol, sec_type, right, strike, expiry = row
        key = contract_partition_key(account, conid, symbol, sec_type, right, strike, expiry)
        contract = contract_from_key(key)
        if contract not in have:
            have.add(contract)
            keys.append(key)
    return keys


def _queue_metadata(queue: pl.DataFrame, version: int) -> dict[str, object]:
    pending = queue.filter(pl.col("status") == PENDING)
    oldest = pending["queued_at"].min() if pending.height else None
    by_status = {str(s): int(n) for s, n in queue.group_by("status").len().iter_rows()}
    return {
        "table_version": version,
        "contracts": queue.height,
        "pending": by_status.get("pending", 0),
        "done": by_status.get("done", 0),
        "failed": by_status.get("failed", 0),
        "oldest_pending_age_s": round(time.time() - oldest.timestamp(), 1) if oldest is not None else None,
        "latest_rows": rows_markdown(queue, columns=QUEUE_COLUMNS, newest_by="updated_at"),
    }


def _observe_registry(lake: LakeResource, cursor: QueueCursor) -> list[dg.AssetObservation]:
    registry = StrategyRegistry(lake.root_uri, lake.storage_options)
    version = registry.version()
    if version == cursor.registry_version:
        return []
    cursor.registry_version = version
    legs = registry.all_legs()
    active = legs.filter(pl.col("active")) if legs.height else legs
    return [
        dg.AssetObservation(
            asset_key="strategy_registry",
            tags={"dagster/data_version": str(version)},  # lets the UI tell registry versions apart
            metadata={
                "table_version": version,
                "legs": legs.height,
                "active_legs": active.height,
                "strategies": active["strategy_id"].n_unique() if active.height else 0,
                "latest_active_legs": rows_markdown(active, columns=REGISTRY_COLUMNS, newest_by="updated_at"),
            },
        )
    ]
