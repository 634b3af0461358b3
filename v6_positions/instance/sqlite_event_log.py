"""Dagster's SQLite storage, with event batches written in one transaction per database file.

A batch run reports one materialization per refreshed contract (10,000 in a full batch). Dagster hands such
events to the storage as one batch (`store_event_batch`, when `DAGSTER_EVENT_BATCH_SIZE` > 0), but its SQLite
storage stores them one at a time: each event opens an engine on the run's file and on the index file and
commits twice (~16 ms on this machine's disk), which is what made a 10,000 batch take ~3 minutes. Here a
batch keeps one connection per file open and commits once per file at the end: the same rows, the same
schema, the same code writing them (SqliteEventLogStorage.store_event), far fewer commits.

Should the batch fail, Dagster falls back to storing its events one by one. A failure before the commits
leaves nothing behind. The run shards commit before the index (the run's log is the record; the index mirrors
its asset events), so a failure at the index commit leaves the events in the run's log only: the fallback
then writes just their index copies (the run-shard insert runs and is rolled back), never a second run-log
row per event.

Selected in dagster.yaml (deploy/local/dagster.yaml does, for `make demo` / `make run`):

    storage:
      custom:
        module: v6_positions.instance.sqlite_event_log
        class: BatchedSqliteStorage
        config:
          base_dir: {env: DAGSTER_HOME}

The file layout is Dagster's own (runs in history/runs.db, events in history/runs/*.db), so an instance can
switch between this and `storage: sqlite` freely.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy
from dagster import EventLogEntry
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from v6_positions.dagster_internals import (
    INDEX_SHARD_NAME,
    ConfigurableClassData,
    DagsterSqliteStorage,
    SqliteEventLogStorage,
    event_logs_directory,
    sqlite_busy_timeout_seconds,
)

# What the processes that run batches need in their environment for Dagster to form event batches at all
# (`v6-positions up/demo` set it for `dagster dev`; deploy/production/dagster.yaml for run containers).
EVENT_BATCH_ENV = {"DAGSTER_EVENT_BATCH_SIZE": "1000"}


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """SqliteEventLogStorage whose `store_event_batch` commits once per database file."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(base_dir, inst_data)
        # Per thread: the connections a running batch holds open, by shard (run id or "index"), and the
        # events of a failed batch whose run-log rows were committed (Dagster's fallback stores them again).
        self._batch = threading.local()

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> BatchedSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        self._batch.in_run_log = {}  # events an earlier fallback gave up on are not ours to hold
        if len(events) < 2:
            for event in events:
                self.store_event(event)
            return
        held: dict[str, tuple[Any, Connection]] = {}
        latest: dict[tuple[str, str], tuple[int, EventLogEntry, int]] = {}
        committed: set[str] = set()
        # The lock Dagster takes per connection is taken once for the batch: other threads of this process
        # (the event watcher) wait for the commit instead of reading a half-written batch.
        with self._db_lock:
            self._batch.held, self._batch.latest, self._batch.order = held, latest, itertools.count()
            try:
                for event in events:
                    self.store_event(event)
                self._batch.latest = None
                with self.index_transaction() as conn:
                    for _, event, event_id in sorted(latest.values(), key=lambda entry: entry[0]):
                        super()._store_asset_event(conn, event, event_id)
                for shard in sorted(held, key=lambda name: name == INDEX_SHARD_NAME):  # the index last
                    held[shard][1].commit()
                    committed.add(shard)
            except BaseException:
                for _engine, conn in held.values():
                    conn.rollback()
                # Dagster's fallback stores these again one by one: their run-log rows are in already.
                self._batch.in_run_log = {id(e): e for e in events if e.run_id in committed}
                raise
            finally:
                self._batch.held = self._batch.latest = None
                for engine, conn in held.values():
                    conn.close()
                    engine.dispose()

    def store_event(self, event: EventLogEntry) -> None:
        in_run_log: dict[int, EventLogEntry] | None = getattr(self._batch, "in_run_log", None)
        if not in_run_log or in_run_log.pop(id(event), None) is not event:
            super().store_event(event)
            return
        # Committed to the run's log by a batch whose index commit failed: write the index copy only.
        self._batch.index_only = True
        try:
            super().store_event(event)
        finally:
            self._batch.index_only = False

    def _store_asset_event(self, conn: Connection, event: EventLogEntry, event_id: int) -> None:
        """In a batch, the asset's row (last materialization, last run) is written once at the end, from
        the last event of each kind per asset: each kind sets the same columns, so the row ends as if every
        event had been applied in turn (what dagster-postgres' batch does too)."""
        latest = getattr(self._batch, "latest", None)
        if latest is None or event.dagster_event is None or event.dagster_event.asset_key is None:
            super()._store_asset_event(conn, event, event_id)
            return
        kind = (event.dagster_event.asset_key.to_string(), event.dagster_event.event_type_value)
        latest[kind] = (next(self._batch.order), event, event_id)  # applied at the end in this order

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        held: dict[str, tuple[Any, Connection]] | None = getattr(self._batch, "held", None)
        if held is None:
            if shard != INDEX_SHARD_NAME and getattr(self._batch, "index_only", False):
                with self._rolled_back(shard) as conn:
                    yield conn
                return
            with super()._connect(shard) as conn:
                yield conn
            return
        if shard not in held:
            held[shard] = self._open_in_batch(shard)
        yield held[shard][1]

    @contextmanager
    def _rolled_back(self, shard: str) -> Iterator[Connection]:
        """A connection on `shard` whose writes are rolled back: Dagster's store_event writes the run's row
        and then the index copy, and only the copy is wanted."""
        with self._db_lock:
            engine, conn = self._open_in_batch(shard)
            try:
                yield conn
            finally:
                conn.rollback()
                conn.close()
                engine.dispose()

    def _open_in_batch(self, shard: str) -> tuple[Any, Connection]:
        """A connection on `shard` with a transaction begun; committed by store_event_batch."""
        engine = sqlalchemy.create_engine(  # as Dagster's _connect opens it, but held for the batch
            self.conn_string_for_shard(shard),
            poolclass=NullPool,
            connect_args={"timeout": sqlite_busy_timeout_seconds()},
        )
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        conn = engine.connect()
        conn.begin()
        return engine, conn


class BatchedSqliteStorage(DagsterSqliteStorage):
    """`storage: sqlite`, with the event log of BatchedSqliteEventLogStorage."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(base_dir, inst_data)
        self._event_log_storage = BatchedSqliteEventLogStorage(event_logs_directory(base_dir))

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData, config_value: Any
    ) -> BatchedSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)
