"""Delta table properties a table relies on (change data feed, checkpoint interval), set once if missing.

Set with an ALTER on the open table rather than at creation only, so tables created by an older version
of this project get them too.
"""

from __future__ import annotations

import logging

from deltalake import DeltaTable

from v6_positions.lake.schemas import TableSpec
from v6_positions.lake.tables import retry_on_conflict

log = logging.getLogger(__name__)


def missing_properties(table: DeltaTable, spec: TableSpec) -> dict[str, str]:
    """The spec's properties the table does not set at all (a value someone chose is left alone)."""
    configuration = table.metadata().configuration
    return {key: value for key, value in spec.properties.items() if key not in configuration}


def ensure_properties(table: DeltaTable, spec: TableSpec) -> None:
    """Set the spec's properties the table lacks (one commit, only when something is missing)."""
    if not missing_properties(table, spec):
        return

    def alter() -> None:
        table.update_incremental()
        missing = missing_properties(table, spec)
        if missing:
            table.alter.set_table_properties(missing)
            log.info("%s: table properties set: %s", spec.name, missing)

    retry_on_conflict(alter, what=f"{spec.name} table properties")
    table.update_incremental()
