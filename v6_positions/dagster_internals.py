"""The private Dagster names the package relies on, in one place, each with why no public API serves.

Dagster's `dagster._...` modules change between releases without notice. Only this module imports them, and
v6_positions_tests/instance/test_instance_dagster_internals.py checks on a real instance that each name still
does what its user relies on, so an upgrade that changes one fails that test by name instead of leaving
batch runs silently slower or their partitions mislabelled.

Users: defs/batch/partition_events.py (the events a batch run reports per partition) and
instance/sqlite_event_log.py (the SQLite storage that writes an event batch in one transaction per file).
"""

from __future__ import annotations

import dagster._core.definitions.metadata as _metadata
import dagster._core.events as _events
import dagster._core.storage.event_log.sqlite.sqlite_event_log as dagster_sqlite_event_log
import dagster._core.storage.sqlite_storage as _sqlite_storage
import dagster._core.storage.tags as _tags
import dagster._serdes as _serdes
import dagster._utils.tags as _tag_values

# -- per-partition events of a batch run (defs/batch/partition_events.py) ---------------------------------

# The type of one metadata value as AssetMaterialization takes it (a MetadataValue or a plain int, str, ...).
# `dagster` exports the MetadataValue classes but not this union.
RawMetadataValue = _metadata.RawMetadataValue

# The payload of a hand-built ASSET_MATERIALIZATION event. The public routes that build the event
# (context.log_event, MaterializeResult, AssetMaterialization yielded) pass it through the run's loggers:
# one console line per partition (10,000 in a full batch), and never in a batch.
StepMaterializationData = _events.StepMaterializationData

# `report_dagster_event(batch_metadata=...)` is the only way events reach the storage's store_event_batch as
# one batch (with DAGSTER_EVENT_BATCH_SIZE > 0); an id as Dagster makes them for its own batches.
DagsterEventBatchMetadata = _events.DagsterEventBatchMetadata
generate_event_batch_id = _events.generate_event_batch_id

# The payload of a planned event for one partition: Dagster shows a partition planned by a failed run and
# not materialized in it as failed. No public API reports a run's failed partition.
AssetMaterializationPlannedData = _events.AssetMaterializationPlannedData

# The run tag ("dagster/defer_asset_events") that makes Dagster leave a run's asset events (a planned event
# per partition of the range, a materialization per partition at output) to the asset. Dagster reads it by
# this key; no public constant names it.
EXTERNALLY_MANAGED_ASSETS_TAG: str = _tags.EXTERNALLY_MANAGED_ASSETS_TAG

# How Dagster reads that tag's value ("true", "True", "false", ...), so the asset decides whether to report
# its own events exactly as Dagster decided to skip them. Not exported by `dagster`.
get_boolean_tag_value = _tag_values.get_boolean_tag_value

# -- the batched SQLite event log (instance/sqlite_event_log.py) -----------------------------------------

# The class the batched storage extends: a custom storage named in dagster.yaml is public, the storage
# classes to build one from are not. Its store_event writes through `_connect(shard)` (the run's shard,
# then INDEX_SHARD_NAME) and `_store_asset_event`, the two hooks the batched storage overrides.
SqliteEventLogStorage = dagster_sqlite_event_log.SqliteEventLogStorage

# The shard of the cross-run index file (index.db), which a batch commits last.
INDEX_SHARD_NAME: str = dagster_sqlite_event_log.INDEX_SHARD_NAME

# `storage: sqlite`, which BatchedSqliteStorage extends to swap in its event log (runs and schedules stay
# Dagster's own).
DagsterSqliteStorage = _sqlite_storage.DagsterSqliteStorage

# What Dagster hands a storage named in dagster.yaml (`from_config_value(inst_data, config_value)`).
ConfigurableClassData = _serdes.ConfigurableClassData


def event_logs_directory(base_dir: str) -> str:
    """Where `storage: sqlite` rooted at `base_dir` keeps its event-log files (one per run, index.db): the
    batched storage keeps them there too, so an instance can switch between the two and find its events.
    A private function of Dagster's; the layout is not a setting."""
    return _sqlite_storage._event_logs_directory(base_dir)


def sqlite_busy_timeout_seconds() -> float:
    """How long Dagster's SQLite event log waits for another writer's lock, read where and when Dagster reads
    it (a global of its event-log module, at each connect), so a batch waits as long as a single event."""
    return dagster_sqlite_event_log.SQLITE_BUSY_TIMEOUT_SECONDS
