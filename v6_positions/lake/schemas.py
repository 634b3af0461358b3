"""Every table's schema, declared once. Readers, writers and the schema check all use these specs."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

UTC_TIMESTAMP = pl.Datetime("us", "UTC")

# Polars dtype -> Delta primitive type name; the only types our tables use.
DELTA_TYPE_NAMES: dict[pl.DataType, str] = {
    pl.Int64(): "long",
    pl.Float64(): "double",
    pl.String(): "string",
    pl.Boolean(): "boolean",
    UTC_TIMESTAMP: "timestamp",
    pl.Date(): "date",
}


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str
    columns: dict[str, pl.DataType]
    keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()

    @property
    def polars_schema(self) -> pl.Schema:
        return pl.Schema(self.columns)

    def delta_types(self) -> dict[str, str]:
        return {name: DELTA_TYPE_NAMES[dtype] for name, dtype in self.columns.items()}

    def empty_frame(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.polars_schema)


_CONTRACT = {
    "conid": pl.Int64(),
    "symbol": pl.String(),
    "sec_type": pl.String(),
    "right": pl.String(),
    "strike": pl.Float64(),
    "expiry": pl.String(),  # YYYYMMDD, as IB spells lastTradeDateOrContractMonth
}

STRATEGY_REGISTRY = TableSpec(
    name="strategy_registry",
    columns={
        **_CONTRACT,
        "multiplier": pl.Int64(),
        "strategy_id": pl.Int64(),
        "active": pl.Boolean(),
        "updated_at": UTC_TIMESTAMP,
    },
    keys=("conid",),
)

QUEUE_PAYLOAD_FIELDS = (
    "position",
    "average_cost",
    "market_price",
    "market_value",
    "unrealized_pnl",
    "realized_pnl",
    "payload_time",
)

POSITION_QUEUE = TableSpec(
    name="position_queue",
    columns={
        "account": pl.String(),
        **_CONTRACT,
        "multiplier": pl.Int64(),
        "priority": pl.Int64(),
        "status": pl.String(),  # pending | done | failed
        "attempts": pl.Int64(),
        "last_error": pl.String(),
        "queued_at": UTC_TIMESTAMP,  # when the current wait began: the age get_batch orders by
        "processed_at": UTC_TIMESTAMP,
        "position": pl.Float64(),
        "average_cost": pl.Float64(),
        "market_price": pl.Float64(),
        "market_value": pl.Float64(),
        "unrealized_pnl": pl.Float64(),
        "realized_pnl": pl.Float64(),
        "payload_time": UTC_TIMESTAMP,
        "updated_at": UTC_TIMESTAMP,  # last insert/refresh of this row
    },
    keys=("account", "conid"),
)

# Fields of one position observation (PositionRow), in order.
POSITION_ROW_COLUMNS: dict[str, pl.DataType] = {
    "account": pl.String(),
    **_CONTRACT,
    "position": pl.Float64(),
    "market_price": pl.Float64(),
    "bid": pl.Float64(),
    "ask": pl.Float64(),
    "last": pl.Float64(),
    "market_value": pl.Float64(),
    "average_cost": pl.Float64(),
    "unrealized_pnl": pl.Float64(),
    "delta": pl.Float64(),
    "gamma": pl.Float64(),
    "vega": pl.Float64(),
    "theta": pl.Float64(),
    "implied_vol": pl.Float64(),
    "underlying_price": pl.Float64(),
    "source": pl.String(),
    "event_time": UTC_TIMESTAMP,
}


def _history_spec(name: str) -> TableSpec:
    return TableSpec(
        name=name,
        columns={**POSITION_ROW_COLUMNS, "written_at": UTC_TIMESTAMP, "event_date": pl.Date()},
        keys=("account", "conid"),
        partition_by=("event_date",),
    )


STREAMED_POSITIONS = _history_spec("streamed_positions")
# Batch-refreshed rows: the same shape as the stream's history, source="batch".
QUEUED_POSITIONS = _history_spec("queued_positions")

POSITIONS = TableSpec(
    name="positions",
    columns={
        **POSITION_ROW_COLUMNS,
        "written_at": UTC_TIMESTAMP,
        "age_s": pl.Float64(),  # refreshed_at - event_time, at the time of the refresh
        "refreshed_at": UTC_TIMESTAMP,
    },
    keys=("account", "conid"),
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (STRATEGY_REGISTRY, POSITION_QUEUE, STREAMED_POSITIONS, QUEUED_POSITIONS, POSITIONS)
}
HISTORY_TABLES = (STREAMED_POSITIONS.name, QUEUED_POSITIONS.name)


def spec_for(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        raise ValueError(f"unknown table {name!r}; known: {', '.join(TABLES)}") from None
