"""One position observation (PositionRow): its checks and its history-table frame.

Shared by the history writers and the incremental book (`positions`), so both see exactly the same
validated values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime

import polars as pl

from v6_positions.lake import validation as v
from v6_positions.lake.errors import InvalidRowError
from v6_positions.lake.schemas import POSITION_ROW_COLUMNS, TableSpec
from v6_positions.lake.tables import conform

_PRICE_FIELDS = tuple(
    name for name, dtype in POSITION_ROW_COLUMNS.items() if dtype == pl.Float64() and name not in ("strike",)
)


@dataclass(slots=True)
class PositionRow:
    account: str
    conid: int
    symbol: str
    sec_type: str = "OPT"
    right: str | None = None
    strike: float | None = None
    expiry: str | None = None
    position: float | None = None
    market_price: float | None = None
    bid: float | None = None
    ask: float | None = None
    last: float | None = None
    market_value: float | None = None
    average_cost: float | None = None
    unrealized_pnl: float | None = None
    delta: float | None = None
    gamma: float | None = None
    vega: float | None = None
    theta: float | None = None
    implied_vol: float | None = None
    underlying_price: float | None = None
    source: str = "stream"
    event_time: datetime | None = None  # aware UTC; None means "now" (set when appended)


assert tuple(f.name for f in fields(PositionRow)) == tuple(POSITION_ROW_COLUMNS), "PositionRow != schema"


def validated_record(row: PositionRow) -> dict[str, object]:
    """The row as a dict of column values, checked and normalised (NaN / IB max-double -> None)."""
    sec_type = v.check_sec_type(row.sec_type)
    if not isinstance(row.source, str) or not row.source.strip():
        raise InvalidRowError("source", row.source, "must be a non-empty string")
    record: dict[str, object] = {
        "account": v.check_account(row.account),
        "conid": v.check_conid(row.conid),
        "symbol": v.check_symbol(row.symbol),
        "sec_type": sec_type,
        "right": v.check_right(row.right, required=False),
        "strike": v.check_strike(row.strike, required=False, sec_type=sec_type),
        "expiry": v.check_expiry(row.expiry, required=False),
        "source": row.source.strip(),
        "event_time": v.check_time("event_time", row.event_time, required=False) or datetime.now(UTC),
    }
    for name in _PRICE_FIELDS:
        record[name] = v.check_optional_number(name, getattr(row, name))
    return record


def validated_records(table: str, rows: Iterable[PositionRow]) -> list[dict[str, object]]:
    """Every row checked; the first bad one raises InvalidRowError naming the table and the row index."""
    records = []
    for index, row in enumerate(rows):
        try:
            records.append(validated_record(row))
        except InvalidRowError as exc:
            raise exc.at(table, index) from None
    return records


def history_frame(records: list[dict[str, object]], spec: TableSpec, written_at: datetime) -> pl.DataFrame:
    """Validated records as rows of a history table (`written_at` and the `event_date` partition added)."""
    frame = pl.DataFrame(records, schema=dict(POSITION_ROW_COLUMNS))
    frame = frame.with_columns(written_at=pl.lit(written_at), event_date=pl.col("event_time").dt.date())
    return conform(frame, spec)
