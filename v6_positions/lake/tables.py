"""Opening, creating, checking and reading the Delta tables under one root URI."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from typing import TypeVar

import polars as pl
from deltalake import DeltaTable, Field, Schema
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.schema import PrimitiveType

from v6_positions.lake.errors import LakeError, LakeSchemaError
from v6_positions.lake.schemas import ADDED_COLUMNS, OPEN_SCHEMA_TABLES, TableSpec, spec_for

log = logging.getLogger(__name__)

T = TypeVar("T")


def table_uri(root_uri: str, name: str) -> str:
    return f"{root_uri.rstrip('/')}/{name}"


def local_path(uri: str) -> str | None:
    """The filesystem path of a local URI, or None for object stores (s3://, az://, gs://, ...)."""
    if uri.startswith("file://"):
        return uri[len("file://") :]
    if "://" in uri:
        return None
    return uri


# Delta types a program other than ours may have used for a column we declare (readers cast on read):
# integers of any width for long, any number for double, timestamp without time zone (taken as UTC).
COMPATIBLE_TYPES: dict[str, frozenset[str]] = {
    "long": frozenset({"long", "integer", "short", "byte"}),
    "double": frozenset({"double", "float", "long", "integer", "short", "byte"}),
    "string": frozenset({"string"}),
    "boolean": frozenset({"boolean"}),
    "timestamp": frozenset({"timestamp", "timestamp_ntz"}),
    "date": frozenset({"date"}),
}


def check_schema(table: DeltaTable, spec: TableSpec, uri: str) -> None:
    """Refuse a table whose columns break the declared schema, naming the column and the table.

    Our own tables must match exactly. Tables other programs write (OPEN_SCHEMA_TABLES: the registry) need
    every declared column with a compatible type; extra columns are allowed and ignored."""
    actual = {field.name: str(getattr(field.type, "type", field.type)) for field in table.schema().fields}
    expected = spec.delta_types()
    open_schema = spec.name in OPEN_SCHEMA_TABLES

    def fits(name: str) -> bool:
        if actual[name] == expected[name]:
            return True
        return open_schema and actual[name] in COMPATIBLE_TYPES.get(expected[name], frozenset())

    missing = sorted(set(expected) - set(actual))
    extra = [] if open_schema else sorted(set(actual) - set(expected))
    changed = sorted(n for n in set(expected) & set(actual) if not fits(n))
    if missing or extra or changed:
        details = "; ".join(
            part
            for part in (
                f"missing {'required ' if open_schema else ''}columns {missing}" if missing else "",
                f"unexpected columns {extra}" if extra else "",
                ", ".join(
                    f"{n} is {actual[n]} "
                    + (f"(not compatible with {expected[n]})" if open_schema else f"not {expected[n]}")
                    for n in changed
                ),
            )
            if part
        )
        raise LakeSchemaError(spec.name, uri, f"schema does not match the declared one ({details})")
    partitions = tuple(table.metadata().partition_columns)
    if partitions != spec.partition_by:
        raise LakeSchemaError(
            spec.name, uri, f"partitioned by {list(partitions)}, expected {list(spec.partition_by)}"
        )


def _refuse_non_delta_location(spec: TableSpec, uri: str) -> None:
    path = local_path(uri)
    if path is None:
        return  # object stores: absence and "something else" look alike without a listing
    if os.path.isfile(path):
        raise LakeSchemaError(spec.name, uri, "is a file, not a Delta table")
    root = os.path.dirname(os.path.abspath(path))
    if os.path.exists(root) and not os.path.isdir(root):
        raise LakeSchemaError(spec.name, uri, f"the lake root {root} is a file, not a directory")
    if os.path.isdir(path) and os.listdir(path):
        raise LakeSchemaError(spec.name, uri, "exists but is not a Delta table (no commit in _delta_log)")


def open_table(root_uri: str, name: str, storage_options: dict[str, str] | None = None) -> DeltaTable | None:
    """The table if it exists (schema checked), None if nothing is there yet."""
    spec = spec_for(name)
    uri = table_uri(root_uri, name)
    try:
        table = DeltaTable(uri, storage_options=storage_options)
    except TableNotFoundError:
        _refuse_non_delta_location(spec, uri)
        return None
    except (DeltaError, OSError) as exc:  # a corrupt log, unreachable storage, bad storage options
        raise LakeSchemaError(spec.name, uri, f"cannot be opened as a Delta table: {exc}") from exc
    add_missing_columns(table, spec)
    check_schema(table, spec, uri)
    return table


def add_missing_columns(table: DeltaTable, spec: TableSpec) -> None:
    """Append the columns added to our schemas since a table was created (schemas.ADDED_COLUMNS, nullable:
    old rows read them as null), in one commit, once. A table that differs in any other way is left as it
    is for `check_schema` to refuse; tables other programs write are never altered."""
    if spec.name in OPEN_SCHEMA_TABLES:
        return

    def missing() -> list[str]:
        present = {field.name for field in table.schema().fields}
        if present - set(spec.columns):
            return []  # not an older version of this table
        absent = [name for name in spec.columns if name not in present]
        return absent if set(absent) <= ADDED_COLUMNS else []

    if not missing():
        return

    def alter() -> None:
        table.update_incremental()
        names = missing()
        if names:
            types = spec.delta_types()
            table.alter.add_columns([Field(n, PrimitiveType(types[n]), nullable=True) for n in names])
            log.info("%s: added columns %s (null in older rows)", spec.name, names)

    try:
        retry_on_conflict(alter, what=f"{spec.name} schema evolution")
    except DeltaError as exc:  # a concurrent writer added them first: the check below decides
        log.debug("%s: adding columns failed (%s); re-reading the schema", spec.name, exc)
    table.update_incremental()


def ensure_table(root_uri: str, name: str, storage_options: dict[str, str] | None = None) -> DeltaTable:
    """Open the table, creating it with its declared schema on first use."""
    table = open_table(root_uri, name, storage_options)
    if table is not None:
        return table
    spec = spec_for(name)
    uri = table_uri(root_uri, name)
    path = local_path(uri)
    if path is not None:
        os.makedirs(path, exist_ok=True)
    schema = Schema(
        [Field(col, PrimitiveType(kind), nullable=True) for col, kind in spec.delta_types().items()]
    )
    try:
        table = DeltaTable.create(
            uri,
            schema=schema,
            mode="error",
            partition_by=list(spec.partition_by) or None,
            name=spec.name,
            configuration=dict(spec.properties) or None,  # older tables get them on first use (properties.py)
            storage_options=storage_options,
        )
        log.info("created table %s at %s", spec.name, uri)
        return table
    except DeltaError:
        # Another process may have created it between our look and our create.
        table = open_table(root_uri, name, storage_options)
        if table is None:
            raise
        return table
    except OSError as exc:  # storage refused the write: credentials, permissions, `conditional_put` off
        raise LakeSchemaError(spec.name, uri, f"cannot be created: {exc}") from exc


def table_version(root_uri: str, name: str, storage_options: dict[str, str] | None = None) -> int:
    """The table's current version, -1 when it does not exist yet."""
    table = open_table(root_uri, name, storage_options)
    return -1 if table is None else table.version()


def frame_of(table: DeltaTable, spec: TableSpec) -> pl.DataFrame:
    """The table's rows in the declared column order and types."""
    frame = pl.read_delta(table)
    return frame.select([pl.col(col).cast(dtype) for col, dtype in spec.columns.items()])


def read_table(root_uri: str, name: str, storage_options: dict[str, str] | None = None) -> pl.DataFrame:
    """All rows of a table; an empty frame with the declared schema when the table does not exist yet."""
    spec = spec_for(name)
    table = open_table(root_uri, name, storage_options)
    if table is None:
        return spec.empty_frame()
    return frame_of(table, spec)


def conform(frame: pl.DataFrame, spec: TableSpec) -> pl.DataFrame:
    """Add missing columns as nulls, cast, and order columns as declared: writers never guess the schema."""
    return frame.select(
        [
            (pl.col(col) if col in frame.columns else pl.lit(None)).cast(dtype).alias(col)
            for col, dtype in spec.columns.items()
        ]
    )


def retry_on_conflict(
    operation: Callable[[], T],
    *,
    what: str,
    attempts: int = 200,
    budget_s: float = 60.0,
    base_delay_s: float = 0.02,
    max_delay_s: float = 1.0,
) -> T:
    """Run `operation` again when a concurrent writer won the commit race.

    delta-rs retries plain version clashes itself, but a MERGE/UPDATE whose files another writer rewrote
    fails with CommitFailedError and must be re-run against the new version. `operation` must reload the
    table itself. Backoff is exponential with jitter, and bounded: after `attempts` conflicts or once
    `budget_s` has passed we give up loudly. The budget is mainly time because an attempt on an object
    store takes ~10x longer than on a local disk, so a busy peer wins many more races per attempt there:
    a dozen attempts that suffice locally starve a writer on S3.
    """
    deadline = time.monotonic() + budget_s
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except CommitFailedError as exc:
            delay = min(max_delay_s, base_delay_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
            if attempt == attempts or time.monotonic() + delay > deadline:
                raise LakeError(
                    f"{what}: gave up after {attempt} conflicting commits in {budget_s:.0f}s budget: {exc}"
                ) from exc
            log.debug("%s: commit conflict (attempt %d), retrying in %.3fs", what, attempt, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


class TableHandle:
    """One table, opened and schema-checked once, then brought up to date cheaply before each use.

    Re-opening a DeltaTable replays its log (~10 ms after a few dozen commits); `update_incremental`
    reads only the new commits (~0.5 ms). But a DeltaTable brought forward over hundreds of commits makes
    every write slower (measured: a 100-row append 30 ms -> 120 ms after 300 commits), so the handle
    re-opens from the newest checkpoint every `REOPEN_AFTER_COMMITS`. Not thread-safe: owners serialise.
    """

    REOPEN_AFTER_COMMITS = 100

    def __init__(self, root_uri: str, name: str, storage_options: dict[str, str] | None = None) -> None:
        self.root_uri = root_uri
        self.name = name
        self.storage_options = storage_options
        self._table: DeltaTable | None = None
        self._opened_at = -1

    def latest(self, *, create: bool) -> DeltaTable | None:
        """The table at its newest version; None if absent and `create` is False."""
        if self._table is not None:
            self._table.update_incremental()
            if self._table.version() - self._opened_at < self.REOPEN_AFTER_COMMITS:
                return self._table
            self._table = None  # re-open below: a fresh snapshot from the newest checkpoint
        if create:
            self._table = ensure_table(self.root_uri, self.name, self.storage_options)
        else:
            self._table = open_table(self.root_uri, self.name, self.storage_options)
        if self._table is not None:
            self._opened_at = self._table.version()
        return self._table
