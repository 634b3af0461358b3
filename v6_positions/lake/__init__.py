"""Delta Lake tables of v6-positions: schemas, registry, queue, history writer, positions, maintenance.

No Dagster imports here: Dagster code wraps this layer.
"""

from v6_positions.lake.book_heal import heal_book, refresh_positions
from v6_positions.lake.errors import InvalidRowError, LakeError, LakeSchemaError
from v6_positions.lake.history import HistoryWriter, PositionRow, WriterStats, write_rows
from v6_positions.lake.maintenance import maintain
from v6_positions.lake.positions import apply_to_positions, read_positions
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.registry import RegistryLeg, StrategyRegistry
from v6_positions.lake.rows import QueueItem
from v6_positions.lake.tables import read_table, table_version

__all__ = [
    "apply_to_positions",
    "heal_book",
    "HistoryWriter",
    "InvalidRowError",
    "LakeError",
    "LakeSchemaError",
    "PositionQueue",
    "PositionRow",
    "QueueItem",
    "RegistryLeg",
    "StrategyRegistry",
    "WriterStats",
    "maintain",
    "read_positions",
    "read_table",
    "refresh_positions",
    "table_version",
    "write_rows",
]
