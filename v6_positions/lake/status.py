"""What `v6-positions status` can tell without a live IB client: table versions, queue backlog, row ages."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from v6_positions.lake.tables import read_table, table_version

TABLES = ("strategy_registry", "position_queue", "streamed_positions", "queued_positions", "positions")


def lake_status_lines(root_uri: str, storage_options: dict[str, str] | None = None) -> list[str]:
    now = datetime.now(UTC)
    lines = [f"lake {root_uri}"]
    for name in TABLES:
        version = table_version(root_uri, name, storage_options)
        if version < 0:
            lines.append(f"  {name:<20} absent")
            continue
        frame = read_table(root_uri, name, storage_options)
        detail = f"version={version} rows={frame.height}"
        if name == "strategy_registry" and frame.height:
            detail += f" active={frame.filter(pl.col('active')).height}"
        if name == "position_queue" and frame.height:
            counts = dict(frame.group_by("status").len().iter_rows())
            detail += " " + " ".join(f"{status}={count}" for status, count in sorted(counts.items()))
        if name in ("streamed_positions", "queued_positions") and frame.height:
            newest = frame["event_time"].max()
            if isinstance(newest, datetime):
                stamp = newest if newest.tzinfo else newest.replace(tzinfo=UTC)
                age = (now - stamp).total_seconds()
                detail += f" newest_age={age:.1f}s conids={frame['conid'].n_unique()}"
        lines.append(f"  {name:<20} {detail}")
    return lines
