"""Cheap "has this table changed?" checks, so hot paths reload a table only when its version moved."""

from __future__ import annotations

import os
import time

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from v6_positions.lake.tables import local_path


class VersionProbe:
    """Tells whether a table has a newer version than the one we hold.

    Local tables: a new version is a new `_delta_log/<version>.json`, so one `stat` (~1 µs) answers
    exactly, on every call, and a change made by another process is seen at once. Object stores: a
    listing costs a request, so we ask at most once per `poll_interval_s` (bounded staleness).
    """

    def __init__(
        self, uri: str, storage_options: dict[str, str] | None = None, poll_interval_s: float = 1.0
    ) -> None:
        self._uri = uri
        self._storage_options = storage_options
        self._poll_interval_s = poll_interval_s
        path = local_path(uri)
        self._log_dir = None if path is None else os.path.join(path, "_delta_log")
        self._next_poll = 0.0
        self._table: DeltaTable | None = None

    def newer_than(self, version: int, *, force: bool = False) -> bool:
        if self._log_dir is not None:
            return os.path.exists(os.path.join(self._log_dir, f"{version + 1:020d}.json"))
        now = time.monotonic()
        if not force and now < self._next_poll:
            return False
        self._next_poll = now + self._poll_interval_s
        return self.current_version() > version

    def current_version(self) -> int:
        """The newest committed version (-1 when the table does not exist)."""
        try:
            if self._table is None:
                self._table = DeltaTable(self._uri, storage_options=self._storage_options)
            else:
                self._table.update_incremental()
        except TableNotFoundError:
            return -1
        return self._table.version()
