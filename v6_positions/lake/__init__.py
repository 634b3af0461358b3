"""The Delta Lake tables: no IB, no Dagster (Dagster code wraps this layer).

schemas.py rows.py validation.py   every table's schema; the row records and their field rules
tables.py versions.py properties.py   opening and reading tables; "did it change?"; table properties
registry.py                        StrategyRegistry: the bots' interface (active legs)
queue.py queue_merges.py queue_reads.py   PositionQueue: its writes (MERGEs) and reads (due, change feed)
history.py                         history writers (micro-batched, coalesced, capped)
positions.py book_heal.py          the current book, merged newest-wins; healed from history across crashes
reconcile.py                       the book against IB's position list, and its repairs
maintenance.py                     compaction, vacuum, retention
status.py                          what `v6-positions status` prints: versions, backlog, ages
errors.py                          the lake's errors, each naming what to fix
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
