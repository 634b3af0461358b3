"""The SQLite storage `make demo` runs on (deploy/local/dagster.yaml): a batch of events is stored in one
transaction per file (all or nothing), and what the UI reads back after a batch run is exactly what Dagster's
own SQLite storage gives for the same run. (How much faster: benchmarks/dagster_bench.py.)"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections import Counter

import dagster as dg
import pytest
import sqlalchemy
from batch_helpers import (
    GATEWAY,
    materialize_range,
    partition_status,
    queue_and_partition,
    run_materializations,
)
from dagster import DagsterEvent, DagsterEventType, EventLogEntry

from v6_positions.dagster_internals import INDEX_SHARD_NAME, SqliteEventLogStorage, StepMaterializationData
from v6_positions.defs.stream.heartbeat import GATEWAY_TAG, HEARTBEAT_TAG, STREAM_JOB_NAME
from v6_positions.instance.sqlite_event_log import BatchedSqliteEventLogStorage

CONTRACTS = 40


def run_a_batch(defs: dg.Definitions, instance: dg.DagsterInstance, lake_root: str) -> tuple[list[str], str]:
    """A live stream (its queued payloads are current) and a batch run over CONTRACTS queued contracts."""
    tags = {GATEWAY_TAG: GATEWAY, HEARTBEAT_TAG: f"{time.time():.3f}"}
    instance.add_run(dg.DagsterRun(job_name=STREAM_JOB_NAME, run_id=str(uuid.uuid4()), tags=tags))
    keys = queue_and_partition(lake_root, instance, {3000 + i: float(i % 3) for i in range(CONTRACTS)})
    result = materialize_range(defs, instance, keys)
    assert result.success
    return keys, result.run_id


def test_a_batch_run_reads_back_like_on_dagsters_sqlite(
    make_defs, instance, lake_root, tmp_path
):
    assert isinstance(instance.event_log_storage, BatchedSqliteEventLogStorage)
    keys, run_id = run_a_batch(make_defs(), instance, lake_root)
    reported = run_materializations(instance, run_id)
    assert set(reported) == set(keys)
    assert partition_status(instance) == (set(keys), set())

    # The same batch again (same lake: the contracts are re-queued) on Dagster's own SQLite storage.
    (tmp_path / "plain_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "plain_home")) as plain:
        assert type(plain.event_log_storage) is SqliteEventLogStorage
        plain_keys, plain_run_id = run_a_batch(make_defs(), plain, lake_root)
        assert plain_keys == keys
        plain_reported = run_materializations(plain, plain_run_id)
        assert without_ages(plain_reported) == without_ages(reported)
        assert partition_status(plain) == partition_status(instance)
        # The asset row (what the asset graph shows as latest) names the run's last event, as Dagster's does.
        for inst, run, found in ((instance, run_id, reported), (plain, plain_run_id, plain_reported)):
            latest = inst.get_latest_materialization_event(dg.AssetKey("queued_positions"))
            assert latest.run_id == run and latest.asset_materialization.partition == list(found)[-1]
            assert inst.get_latest_materialization_event(dg.AssetKey("positions")).run_id == run


def without_ages(found: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    return {key: {name: value for name, value in md.items() if name != "age_s"} for key, md in found.items()}


def test_a_batch_that_fails_midway_stores_none_of_its_events(instance):
    storage = instance.event_log_storage
    assert isinstance(storage, BatchedSqliteEventLogStorage)
    run_id = "a" * 32

    def materialization(run: str, partition: str) -> EventLogEntry:
        event = DagsterEvent(
            event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
            job_name="batch",
            event_specific_data=StepMaterializationData(
                dg.AssetMaterialization(asset_key="queued_positions", partition=partition)
            ),
        )
        return EventLogEntry(
            error_info=None, level=10, user_message="", run_id=run, timestamp=time.time(),
            dagster_event=event, job_name="batch",
        )

    # The third event's run shard cannot be opened (its directory does not exist): the batch fails there, and
    # the two before it, stored in the same transactions, are rolled back (Dagster's storage would keep them).
    batch = [materialization(run_id, f"p{n}") for n in (1, 2)] + [materialization("no/such/dir", "p3")]
    with pytest.raises(Exception):  # noqa: B017 - sqlalchemy's OperationalError, whatever its wrapper
        storage.store_event_batch(batch)
    assert storage.get_logs_for_run(run_id) == []
    assert instance.get_latest_materialization_event(dg.AssetKey("queued_positions")) is None
    # The storage is still usable, and a good batch is stored whole.
    storage.store_event_batch(batch[:2])
    assert len(storage.get_logs_for_run(run_id)) == 2
    latest = instance.get_latest_materialization_event(dg.AssetKey("queued_positions"))
    assert latest is not None and latest.asset_materialization.partition == "p2"


def test_an_index_commit_that_fails_after_the_run_log_commit_leaves_each_event_once(
    make_defs, instance, lake_root, monkeypatch
):
    """The run's log commits first, the index last. When the index refuses its commit (a disk error, a lock
    it could not outwait), Dagster stores the batch again event by event: the run's log must still show each
    contract once, and the asset's history and partition status must get every event the index missed."""
    refused: list[str] = []
    open_in_batch = BatchedSqliteEventLogStorage._open_in_batch

    def index_refuses_its_first_commit(storage, shard):
        engine, conn = open_in_batch(storage, shard)
        if shard == INDEX_SHARD_NAME and not refused:
            refused.append("armed")

            def refuse(connection) -> None:
                refused.append("refused")
                raise sqlite3.OperationalError("disk I/O error")

            sqlalchemy.event.listen(conn, "commit", refuse)
        return engine, conn

    monkeypatch.setattr(BatchedSqliteEventLogStorage, "_open_in_batch", index_refuses_its_first_commit)
    keys, run_id = run_a_batch(make_defs(), instance, lake_root)
    assert refused == ["armed", "refused"]  # the batch of materializations did fail at the index commit

    reported = run_materializations(instance, run_id)  # asserts that no contract is reported twice
    assert list(reported) == keys
    in_run_log = Counter(
        (r.event_log_entry.dagster_event_type, r.event_log_entry.dagster_event.partition)
        for r in instance.get_records_for_run(run_id).records
        if r.event_log_entry.dagster_event is not None and r.event_log_entry.dagster_event.partition
    )
    assert set(in_run_log.values()) == {1}
    # The index (what the asset's page and partition status read) holds each of the run's events once too.
    history = instance.fetch_materializations(dg.AssetKey("queued_positions"), limit=10 * CONTRACTS).records
    assert sorted(r.partition_key for r in history if r.run_id == run_id) == sorted(keys)
    assert partition_status(instance) == (set(keys), set())
    latest = instance.get_latest_materialization_event(dg.AssetKey("queued_positions"))
    assert latest.run_id == run_id and latest.asset_materialization.partition == keys[-1]
