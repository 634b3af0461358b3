"""The queue sensor: turns new position_queue keys into `queued_positions` partitions.

Each tick reads only the queue rows changed since the cursor's table version (the queue's change data feed),
so its cost follows the new rows, not the queue's size or the day's history. Kept apart from the stream
supervisor so a broken or slow lake never stops stream supervision. It also observes the registry and queue
tables (versions, what changed) for the UI. It never talks to IB.
"""

import json
from dataclasses import asdict, dataclass

import dagster as dg
import polars as pl

from v6_positions.defs.batch.partition_keys import contract_from_key, contract_partition_key, queued_contracts
from v6_positions.defs.metadata import QUEUE_COLUMNS, REGISTRY_COLUMNS, rows_markdown
from v6_positions.defs.resources import LakeResource
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.registry import StrategyRegistry
from v6_positions.lake.rows import PENDING
from v6_positions.lake.tables import table_version

# The recommended ceiling of partition additions per evaluation; the rest waits for the next tick.
MAX_NEW_PARTITIONS_PER_TICK = 25_000
# Up to this many candidate rows are checked one partition lookup each; beyond, one listing is cheaper.
_LOOKUP_LIMIT = 200
_KEY_FIELDS = ("account", "conid", "symbol", "sec_type", "right", "strike", "expiry")


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
    """Partitions for queue rows changed since the cursor's version: O(changed rows), not O(queue)."""
    version = table_version(lake.root_uri, "position_queue", lake.storage_options)
    if version == cursor.queue_version:
        return [], []
    version, changed = PositionQueue(lake.root_uri, lake.storage_options).changes_since(cursor.queue_version)
    # A row that was ever processed has been in a batch run, so its partition exists: only never-processed
    # rows can lack one (new contracts, and re-opened ones whose row the clean-up removed).
    candidates = changed.filter(pl.col("processed_at").is_null())
    new_keys = new_partition_keys(candidates, _existing(context.instance, candidates))
    if len(new_keys) > MAX_NEW_PARTITIONS_PER_TICK:
        new_keys = new_keys[:MAX_NEW_PARTITIONS_PER_TICK]  # cursor not advanced: the rest come next tick
    else:
        cursor.queue_version = version
    observation = dg.AssetObservation(
        asset_key="position_queue", metadata=_queue_metadata(changed, version, len(new_keys))
    )
    if new_keys:
        context.log.info(f"adding {len(new_keys)} queued_positions partitions (queue version {version})")
        return [queued_contracts.build_add_request(new_keys)], [observation]
    return [], [observation]


def _existing(instance: dg.DagsterInstance, candidates: pl.DataFrame) -> list[str]:
    """The partition keys among the candidates' that exist: one lookup each when they are few, else one
    listing (a first tick or a reset cursor sees every row as a candidate)."""
    if candidates.height > _LOOKUP_LIMIT:
        return list(instance.get_dynamic_partitions(queued_contracts.name))
    return [
        key
        for key in (_row_key(row) for row in candidates.select(*_KEY_FIELDS).iter_rows())
        if instance.has_dynamic_partition(queued_contracts.name, key)
    ]


def _row_key(row: tuple) -> str:
    account, conid, symbol, sec_type, right, strike, expiry = row
    return contract_partition_key(account, conid, symbol, sec_type, right, strike, expiry)


def new_partition_keys(queue: pl.DataFrame, existing: list[str] | tuple[str, ...]) -> list[str]:
    """Keys of queued contracts that have no partition yet, most urgent and oldest first.

    Contracts are matched by (account, conid), not by the whole key, so a contract whose descriptive fields
    changed keeps its first partition instead of getting a second one (when `existing` lists them all).
    """
    have = set()
    for key in existing:
        try:
            have.add(contract_from_key(key))
        except ValueError:
            continue
    keys: list[str] = []
    ordered = queue.sort(["priority", "queued_at", "account", "conid"], nulls_last=True)
    for row in ordered.select(*_KEY_FIELDS).iter_rows():
        key = _row_key(row)
        contract = contract_from_key(key)
        if contract not in have:
            have.add(contract)
            keys.append(key)
    return keys


def _queue_metadata(changed: pl.DataFrame, version: int, new_contracts: int) -> dict[str, object]:
    """What changed in the queue since the last tick (the backlog as a whole is the queue_backlog check's)."""
    pending = changed.filter(pl.col("status") == PENDING)
    return {
        "table_version": version,
        "rows_changed": changed.height,
        "pending_among_changed": pending.height,
        "new_contracts": new_contracts,
        "latest_rows": rows_markdown(changed, columns=QUEUE_COLUMNS, newest_by="updated_at"),
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
