"""The streaming leg: an ib_async session that streams active strategy legs and queues everything else.

No Dagster imports here; `v6_positions.defs` wraps this package.
"""
