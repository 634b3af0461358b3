"""What the package takes from Dagster's private modules (v6_positions.dagster_internals) still does what it
is taken for, on real instances: a Dagster upgrade that changes one fails here, by name, instead of leaving
batch runs silently slower (events stored one by one) or their partitions mislabelled.

Behaviour where it is cheap (a real run reporting its partitions through the project's SQLite storage, a real
event-log storage writing an event); the shape of a private method where behaviour would need a second writer.
Dagster falling back to single events when a batch fails is covered by test_instance_sqlite_event_log.py.
"""

import inspect
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy.engine import Connection

from v6_positions import dagster_internals
from v6_positions.dagster_internals import (
    INDEX_SHARD_NAME,
    DagsterSqliteStorage,
    SqliteEventLogStorage,
    StepMaterializationData,
    dagster_sqlite_event_log,
    event_logs_directory,
    sqlite_busy_timeout_seconds,
)
from v6_positions.defs.batch.partition_events import (
    DEFER_EVENTS_TAG,
    events_deferred,
    report_failed,
    report_materialized,
)
from v6_positions.defs.batch.partition_keys import contract_partition_key, queued_contracts
from v6_positions.defs.batch.schedule import RANGE_END_TAG, RANGE_START_TAG
from v6_positions.instance.sqlite_event_log import BatchedSqliteEventLogStorage, BatchedSqliteStorage

PROBE = dg.AssetKey("internals_probe")
PROBE_JOB = "internals_probe_job"
KEYS = [contract_partition_key("DU1", 100 + n, "SPY", "OPT", "C", 600 + n, "20261218") for n in range(5)]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("RawMetadataValue", object),
        ("StepMaterializationData", type),
        ("DagsterEventBatchMetadata", type),
        ("generate_event_batch_id", "callable"),
        ("AssetMaterializationPlannedData", type),
        ("EXTERNALLY_MANAGED_ASSETS_TAG", str),
        ("get_boolean_tag_value", "callable"),
        ("SqliteEventLogStorage", type),
        ("INDEX_SHARD_NAME", str),
        ("DagsterSqliteStorage", type),
        ("ConfigurableClassData", type),
    ],
)
def test_each_name_the_adapter_gives_resolves(name, kind):
    value = getattr(dagster_internals, name)
    assert callable(value) if kind == "callable" else isinstance(value, kind), f"{name} is now {value!r}"


def probe_job(outcome: dict[str, list[str]], deferred: list[bool]) -> dg.JobDefinition:
    """A job of one asset on the queued-contract partitions that reports per partition as the batch asset
    does: the `materialized` keys with metadata, the `failed` keys as failed (and then fails the run)."""

    @dg.asset(key=PROBE, partitions_def=queued_contracts)
    def internals_probe(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        deferred.append(events_deferred(context))
        if deferred[-1]:
            report_materialized(context, {key: {"rank": KEYS.index(key)} for key in outcome["materialized"]})
            report_failed(context, outcome["failed"])
        if outcome["failed"]:
            raise dg.Failure(description=f"failed: {outcome['failed']}")
        return dg.MaterializeResult()

    job = dg.define_asset_job(PROBE_JOB, selection=[PROBE], executor_def=dg.in_process_executor)
    return dg.Definitions(assets=[internals_probe], jobs=[job]).resolve_job_def(PROBE_JOB)


def partitions_in_run(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> list:
    records = instance.get_records_for_run(run_id, of_type=event_type).records
    return [r.event_log_entry.dagster_event.partition for r in records if r.event_log_entry.dagster_event]


def test_a_deferred_range_run_reports_exactly_its_materialized_and_failed_partitions_in_one_batch(
    instance, monkeypatch
):
    storage = instance.event_log_storage
    assert isinstance(storage, BatchedSqliteEventLogStorage)  # the project's storage, from dagster.yaml
    instance.add_dynamic_partitions(queued_contracts.name, KEYS)
    # KEYS[3] is in the range but neither committed nor failed (a key bridged to keep the range contiguous).
    outcome = {"materialized": [KEYS[0], KEYS[2], KEYS[4]], "failed": [KEYS[1]]}
    batches: list[list[str]] = []
    store_event_batch = storage.store_event_batch

    def recording_store_event_batch(events: Sequence[dg.EventLogEntry]) -> None:
        batches.append([event.dagster_event.partition for event in events])
        store_event_batch(events)

    monkeypatch.setattr(storage, "store_event_batch", recording_store_event_batch)
    deferred: list[bool] = []
    result = probe_job(outcome, deferred).execute_in_process(
        instance=instance,
        tags={DEFER_EVENTS_TAG: "true", RANGE_START_TAG: KEYS[0], RANGE_END_TAG: KEYS[-1]},
        raise_on_error=False,
    )
    assert not result.success and deferred == [True]

    # The materializations reached the storage as one batch (not one by one).
    assert batches == [outcome["materialized"]]
    # The tag kept Dagster from reporting the range itself: the run's events are exactly the asset's own.
    materialized = partitions_in_run(instance, result.run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)
    planned = partitions_in_run(instance, result.run_id, dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
    assert (materialized, planned) == (outcome["materialized"], outcome["failed"])
    # Read back as the asset's materializations, with their partition and metadata, as the UI reads them.
    history = instance.fetch_materializations(PROBE, limit=20).records
    assert {r.partition_key: r.asset_materialization.metadata["rank"].value for r in history} == {
        KEYS[0]: 0, KEYS[2]: 2, KEYS[4]: 4
    }
    latest = instance.get_latest_materialization_event(PROBE)
    assert latest.run_id == result.run_id and latest.asset_materialization.partition == KEYS[4]
    status = instance.get_status_by_partition(PROBE, KEYS, queued_contracts)
    done, failed = dg.AssetPartitionStatus.MATERIALIZED, dg.AssetPartitionStatus.FAILED
    assert status == {KEYS[0]: done, KEYS[1]: failed, KEYS[2]: done, KEYS[3]: None, KEYS[4]: done}


def test_a_run_without_the_tag_leaves_its_events_to_dagster(instance):
    instance.add_dynamic_partitions(queued_contracts.name, KEYS[:1])
    deferred: list[bool] = []
    result = probe_job({"materialized": [], "failed": []}, deferred).execute_in_process(
        instance=instance, partition_key=KEYS[0]
    )
    assert result.success and deferred == [False]
    assert partitions_in_run(instance, result.run_id, dg.DagsterEventType.ASSET_MATERIALIZATION) == KEYS[:1]


def materialization(run_id: str, partition: str) -> dg.EventLogEntry:
    event = dg.DagsterEvent(
        event_type_value=dg.DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name="batch",
        event_specific_data=StepMaterializationData(
            dg.AssetMaterialization(asset_key=PROBE, partition=partition)
        ),
    )
    return dg.EventLogEntry(
        error_info=None, level=10, user_message="", run_id=run_id, timestamp=time.time(),
        dagster_event=event, job_name="batch",
    )


def test_the_batched_storage_keeps_dagsters_sqlite_files_so_an_instance_can_switch(tmp_path):
    run_id = "b" * 32
    batched_home, plain_home = tmp_path / "batched", tmp_path / "plain"
    batched = BatchedSqliteStorage.from_local(str(batched_home))
    plain = DagsterSqliteStorage.from_local(str(plain_home))
    try:
        assert type(plain.event_log_storage) is SqliteEventLogStorage
        for storage, home in ((batched, batched_home), (plain, plain_home)):
            storage.event_log_storage.store_event(materialization(run_id, "p1"))
            events_dir = Path(event_logs_directory(str(home)))
            assert Path(storage.event_log_storage.path_for_shard(INDEX_SHARD_NAME)) == events_dir / "index.db"
            assert {p.name for p in events_dir.glob("*.db")} == {"index.db", f"{run_id}.db"}
    finally:
        batched.dispose()
        plain.dispose()
    # Dagster's own storage opened on the batched storage's files finds the event in the run and the index.
    reopened = DagsterSqliteStorage.from_local(str(batched_home))
    try:
        logs = reopened.event_log_storage.get_logs_for_run(run_id)
        assert [entry.dagster_event.partition for entry in logs] == ["p1"]
        assert reopened.event_log_storage.get_materialized_partitions(PROBE) == {"p1"}
    finally:
        reopened.dispose()


class RecordingEventLog(SqliteEventLogStorage):
    """Dagster's SQLite event log, noting the connections its store_event opens and the asset-row writes."""

    def __init__(self, base_dir: str) -> None:
        self.calls: list[tuple[str, str]] = []
        self.connections: dict[str, Connection] = {}
        super().__init__(base_dir)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with super()._connect(shard) as conn:
            self.calls.append(("connect", shard))
            self.connections[shard] = conn
            yield conn

    def _store_asset_event(self, conn: Connection, event: dg.EventLogEntry, event_id: int) -> None:
        assert conn is self.connections[INDEX_SHARD_NAME] and isinstance(event_id, int)
        self.calls.append(("asset row", event.dagster_event.partition))
        super()._store_asset_event(conn, event, event_id)


def test_dagsters_store_event_writes_through_the_hooks_the_batched_storage_overrides(tmp_path):
    """BatchedSqliteEventLogStorage holds one connection per shard by overriding `_connect(shard)`, and writes
    each asset's row once per batch by overriding `_store_asset_event(conn, event, event_id)`: Dagster's
    store_event must reach the run's shard and the index through the first, and the asset row through the
    second, on the index connection."""
    storage = RecordingEventLog(str(tmp_path / "events"))
    try:
        storage.calls.clear()  # what opening the index took
        storage.store_event(materialization("c" * 32, "p1"))
        assert storage.calls == [("connect", "c" * 32), ("connect", INDEX_SHARD_NAME), ("asset row", "p1")]
        # What the batched storage opens and marks itself (its `_open_in_batch`), as Dagster's _connect does.
        assert isinstance(storage._db_lock, type(threading.Lock()))
        assert {"c" * 32, INDEX_SHARD_NAME} <= storage._initialized_dbs
        assert storage.conn_string_for_shard(INDEX_SHARD_NAME).startswith("sqlite:///")
        assert list(inspect.signature(SqliteEventLogStorage._initdb).parameters)[:2] == ["self", "engine"]
    finally:
        storage.dispose()


def test_the_busy_timeout_is_the_one_dagsters_connections_read_at_connect(monkeypatch):
    """A batch's connections wait for a lock as long as Dagster's own: both read the event-log module's
    global when a connection opens (so a test shortening it shortens both)."""
    connect = getattr(SqliteEventLogStorage._connect, "__wrapped__", SqliteEventLogStorage._connect)
    assert "SQLITE_BUSY_TIMEOUT_SECONDS" in connect.__code__.co_names
    assert connect.__globals__ is vars(dagster_sqlite_event_log)
    assert sqlite_busy_timeout_seconds() > 0
    monkeypatch.setattr(dagster_sqlite_event_log, "SQLITE_BUSY_TIMEOUT_SECONDS", 0.5)
    assert sqlite_busy_timeout_seconds() == 0.5
