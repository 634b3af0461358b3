"""Every table's schema, declared once. Readers, writers and the schema check all use these specs."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    # Delta table properties we rely on; set on first use, also on tables created before we needed them.
    properties: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def polars_schema(self) -> pl.Schema:
        return pl.Schema(self.columns)

    def delta_types(self) -> dict[str, str]:
        return {name: DELTA_TYPE_NAMES[dtype] for name, dtype in self.columns.items()}

    def empty_frame(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.polars_schema)


# Column groups shared by several tables and by the records that carry them (lake/rows.py), declared once.
# The contract of a row (IB's fields, normalised by lake/validation.py):
CONTRACT_COLUMNS: dict[str, pl.DataType] = {
    "conid": pl.Int64(),
    "symbol": pl.String(),
    "sec_type": pl.String(),
    "right": pl.String(),
    "strike": pl.Float64(),
    "expiry": pl.String(),  # YYYYMMDD, as IB spells lastTradeDateOrContractMonth
}
# A contract as held in one account: the key and contract columns every position table starts with.
HELD_CONTRACT_COLUMNS: dict[str, pl.DataType] = {"account": pl.String(), **CONTRACT_COLUMNS}

# strategy_registry is the bots' interface: strategy engines write legs into it directly (deltalake,
# polars). Its contract, checked on every read:
# - Required columns, each of a compatible Delta type (narrower numbers and timestamp_ntz are accepted):
#     conid long (or integer/short/byte)      symbol string           sec_type string (null = OPT)
#     right string (C/P; CALL/PUT, any case)  strike double (or float/long/integer)
#     expiry string YYYYMMDD                  multiplier long (null = 100 for OPT, 1 for STK)
#     strategy_id long (>= 0)                 active boolean
#     updated_at timestamp (timestamp_ntz is read as UTC)
#   A missing required column or an incompatible type makes every reader refuse the table with an error
#   naming the column and the table (nothing in it can be trusted then).
# - Extra columns (e.g. a bot's `note`, written with schema_mode="merge") are allowed and ignored; our own
#   upserts leave them as they are.
# - Rows are validated one by one: a row that breaks a rule (right "X", strike 0, an OPT with no expiry, a
#   null active, ...) is skipped and reported (StrategyRegistry.invalid_rows(), `registry list` on stderr,
#   the stream's status, the registry_rows_valid asset check); it never stops a reader. Option sec types
#   (OPT, FOP, WAR, IOPT) need right, strike > 0 and expiry. conid is the key: when a bot appended a second
#   row for a conid, the newest updated_at wins and the others are reported.
STRATEGY_REGISTRY = TableSpec(
    name="strategy_registry",
    columns={
        **CONTRACT_COLUMNS,
        "multiplier": pl.Int64(),
        "strategy_id": pl.Int64(),
        "active": pl.Boolean(),
        "updated_at": UTC_TIMESTAMP,
    },
    keys=("conid",),
)

# What IB last told the stream about a queued holding (reqPositions + reqPnLSingle): the queue's payload.
PAYLOAD_COLUMNS: dict[str, pl.DataType] = {
    "position": pl.Float64(),
    "average_cost": pl.Float64(),
    "market_price": pl.Float64(),
    "market_value": pl.Float64(),
    "unrealized_pnl": pl.Float64(),
    "realized_pnl": pl.Float64(),
    "payload_time": UTC_TIMESTAMP,
    "daily_pnl": pl.Float64(),  # IB's dailyPnL (reqPnLSingle): today's P&L of the position
}

POSITION_QUEUE = TableSpec(
    name="position_queue",
    columns={
        **HELD_CONTRACT_COLUMNS,
        "multiplier": pl.Int64(),
        "priority": pl.Int64(),
        "status": pl.String(),  # pending | done | failed
        "attempts": pl.Int64(),
        "last_error": pl.String(),
        "queued_at": UTC_TIMESTAMP,  # when the current wait began: the age due() orders by
        "processed_at": UTC_TIMESTAMP,
        **PAYLOAD_COLUMNS,
        "updated_at": UTC_TIMESTAMP,  # last insert/refresh of this row
    },
    keys=("account", "conid"),
    # The change data feed lets a sensor read only the rows changed since its cursor; checkpoints every
    # 10 commits keep opening the table cheap although every stream and batch step MERGEs into it. Every
    # MERGE rewrites files: the log forgets removed files after a day (else checkpoints grow all week), and
    # keeps an hour of commits (a local open lists them all); a sensor cursor older than that reads once.
    properties={
        "delta.enableChangeDataFeed": "true",
        "delta.checkpointInterval": "10",
        "delta.deletedFileRetentionDuration": "interval 1 days",
        "delta.logRetentionDuration": "interval 1 hours",
    },
)

# Fields of one position observation (PositionRow), in order. Prices and greeks are IB's, per share of ONE
# option (per one unit of the underlying), never per position; null = IB did not compute it (its -1/-2
# markers and unset values are never stored as numbers, see ib/ib_values.py):
# - market_price: mid of a valid two-sided quote, else IB's model price (one-sided/empty quote), else last,
#   else close. market_value = market_price x position x multiplier (IB's convention).
# - delta: option price change per 1.00 move of the underlying; a position's share-equivalent delta is
#   delta x position x multiplier (x underlying_price for dollars).
# - gamma: delta change per 1.00 move of the underlying.
# - vega: option price change per 1 volatility point (0.01 of implied_vol).
# - theta: option price change per calendar day.
# - implied_vol: a fraction (0.25 = 25 %).
# - multiplier: the contract's (100 for most equity options); null in rows written before it was stored.
# - prior_close: IB's close tick (yesterday's close) of a streamed contract.
# - daily_pnl: today's P&L of the position: IB's dailyPnL (reqPnLSingle) for queued positions,
#   (market_price - prior_close) x position x multiplier for streamed ones.
POSITION_ROW_COLUMNS: dict[str, pl.DataType] = {
    **HELD_CONTRACT_COLUMNS,
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
    # Added later, so last: tables created before get them appended (tables.add_missing_columns).
    "multiplier": pl.Float64(),
    "prior_close": pl.Float64(),
    "daily_pnl": pl.Float64(),
}


def _history_spec(name: str) -> TableSpec:
    return TableSpec(
        name=name,
        columns={**POSITION_ROW_COLUMNS, "written_at": UTC_TIMESTAMP, "event_date": pl.Date()},
        keys=("account", "conid"),
        partition_by=("event_date",),
        # Append-only: a removed file is only ever a compaction input whose rows live on in the compacted
        # file, so the log may forget it after an hour; ~one commit per second must not keep a month of log
        # (every open lists the log directory, every checkpoint carries the removed files). The change
        # feed lets the book's healing read only the rows appended since its watermark (appends write no
        # change files: the feed is the added files themselves).
        properties={
            "delta.enableChangeDataFeed": "true",
            "delta.deletedFileRetentionDuration": "interval 1 hours",
            "delta.logRetentionDuration": "interval 1 hours",
        },
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
    # Merged into once per stream flush, and each merge rewrites the book's file: frequent checkpoints keep
    # a fresh open cheap, and removed files are forgotten (and vacuumed by the writers) after 15 minutes,
    # so neither the checkpoint nor the directory grows with the day. Readers hold a snapshot for ms.
    properties={
        "delta.checkpointInterval": "10",
        "delta.deletedFileRetentionDuration": "interval 15 minutes",
        "delta.logRetentionDuration": "interval 15 minutes",
    },
)

# Risk, derived from `positions` and the registry (v6_positions/risk/), by IB's conventions:
# delta = share-equivalents (delta x position x multiplier), dollar_delta = delta x underlying price,
# gamma = share-equivalent delta change per 1.00 of the underlying, theta = dollars per calendar day,
# vega = dollars per volatility point; market value and P&L as in `positions`. Sums skip unknown values.
RISK_MEASURES: dict[str, pl.DataType] = {
    name: pl.Float64()
    for name in (
        "delta", "dollar_delta", "gamma", "theta", "vega", "market_value", "unrealized_pnl", "daily_pnl"
    )
}  # fmt: skip
# Where a position's greeks come from: IB's stream, a model (for options IB sends none for), or the
# definition (a stock or future is delta one). Coverage is counted per source.
GREEKS_SOURCES = ("ib", "model", "delta_one")

STRATEGY_RISK_COLUMNS: dict[str, pl.DataType] = {
    "as_of": UTC_TIMESTAMP,
    "account": pl.String(),  # null: no leg of the strategy is held in any account
    "strategy_id": pl.Int64(),
    "symbols": pl.String(),  # the legs' underlyings, comma-separated
    "legs": pl.Int64(),  # active legs in the registry
    "legs_held": pl.Int64(),  # of those, held in this account
    "legs_missing": pl.Int64(),  # not held in this account (closed, never opened)
    "legs_stale": pl.Int64(),  # held, newest row older than the freshness window
    "legs_with_greeks": pl.Int64(),
    **RISK_MEASURES,
    "max_leg_age_s": pl.Float64(),
}
UNDERLYING_RISK_COLUMNS: dict[str, pl.DataType] = {
    "as_of": UTC_TIMESTAMP,
    "account": pl.String(),
    "underlying": pl.String(),
    "underlying_price": pl.Float64(),
    "positions": pl.Int64(),
    "abs_market_value": pl.Float64(),
    "positions_with_greeks": pl.Int64(),
    "abs_market_value_with_greeks": pl.Float64(),
    "coverage": pl.Float64(),  # abs_market_value_with_greeks / abs_market_value (null when nothing is valued)
    **{f"positions_greeks_{source}": pl.Int64() for source in GREEKS_SOURCES},
    **{f"abs_market_value_greeks_{source}": pl.Float64() for source in GREEKS_SOURCES},
    **RISK_MEASURES,
    "max_age_s": pl.Float64(),
}
# One position's risk (the book at a day's close, v6_positions/risk/position_risk.py computes it).
POSITION_RISK_COLUMNS: dict[str, pl.DataType] = {
    **HELD_CONTRACT_COLUMNS,
    "strategy_id": pl.Int64(),  # the active registry leg's strategy, null for other positions
    "position": pl.Float64(),
    "multiplier": pl.Float64(),
    "market_price": pl.Float64(),
    "underlying_price": pl.Float64(),
    "greeks_source": pl.String(),  # one of GREEKS_SOURCES, null = no greeks
    **RISK_MEASURES,
    "source": pl.String(),
    "event_time": UTC_TIMESTAMP,
    "age_s": pl.Float64(),
}
# The current snapshot is overwritten every refresh: removed files are forgotten after 15 minutes and
# vacuumed by the writer, like `positions`.
_SNAPSHOT_PROPERTIES = {
    "delta.checkpointInterval": "10",
    "delta.deletedFileRetentionDuration": "interval 15 minutes",
    "delta.logRetentionDuration": "interval 15 minutes",
}
# Appended every refresh (one small commit a minute): compaction inputs only are ever removed; a checkpoint
# every 10 commits keeps opening the table (each refresh does) from growing with the day's commits.
_APPEND_PROPERTIES = {
    "delta.checkpointInterval": "10",
    "delta.deletedFileRetentionDuration": "interval 1 hours",
    "delta.logRetentionDuration": "interval 1 hours",
}
STRATEGY_RISK = TableSpec(
    "strategy_risk", STRATEGY_RISK_COLUMNS, ("account", "strategy_id"), properties=_SNAPSHOT_PROPERTIES
)
UNDERLYING_RISK = TableSpec(
    "underlying_risk", UNDERLYING_RISK_COLUMNS, ("account", "underlying"), properties=_SNAPSHOT_PROPERTIES
)


def _risk_history_spec(snapshot: TableSpec) -> TableSpec:
    return TableSpec(
        name=f"{snapshot.name}_history",
        columns={**snapshot.columns, "as_of_date": pl.Date()},  # the UTC date of as_of
        keys=("as_of", *snapshot.keys),
        partition_by=("as_of_date",),
        properties=_APPEND_PROPERTIES,
    )


STRATEGY_RISK_HISTORY = _risk_history_spec(STRATEGY_RISK)
UNDERLYING_RISK_HISTORY = _risk_history_spec(UNDERLYING_RISK)


def _eod_spec(name: str, columns: dict[str, pl.DataType], keys: tuple[str, ...]) -> TableSpec:
    """A table of what held at each day's close (16:00 New York), one partition per day, replaced whole
    when the day is materialized again."""
    return TableSpec(
        name=name,
        columns={"eod_date": pl.Date(), "close_time": UTC_TIMESTAMP, **columns},
        keys=("eod_date", *keys),
        partition_by=("eod_date",),
        properties=_APPEND_PROPERTIES,
    )


BOOK_EOD = _eod_spec("book_eod", POSITION_RISK_COLUMNS, ("account", "conid"))
STRATEGY_RISK_EOD = _eod_spec("strategy_risk_eod", STRATEGY_RISK_COLUMNS, STRATEGY_RISK.keys)
UNDERLYING_RISK_EOD = _eod_spec("underlying_risk_eod", UNDERLYING_RISK_COLUMNS, UNDERLYING_RISK.keys)
RISK_TABLES = (
    STRATEGY_RISK,
    STRATEGY_RISK_HISTORY,
    UNDERLYING_RISK,
    UNDERLYING_RISK_HISTORY,
    BOOK_EOD,
    STRATEGY_RISK_EOD,
    UNDERLYING_RISK_EOD,
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        STRATEGY_REGISTRY,
        POSITION_QUEUE,
        STREAMED_POSITIONS,
        QUEUED_POSITIONS,
        POSITIONS,
        *RISK_TABLES,
    )
}
HISTORY_TABLES = (STREAMED_POSITIONS.name, QUEUED_POSITIONS.name)
# Nullable columns added to tables after they were first created: an older table that lacks only these gets
# them appended on open (tables.add_missing_columns); any other difference is refused.
ADDED_COLUMNS = frozenset({"multiplier", "prior_close", "daily_pnl"})
# Tables other programs write: extra columns are allowed and compatible column types accepted (see above).
OPEN_SCHEMA_TABLES = frozenset({STRATEGY_REGISTRY.name})


def spec_for(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        raise ValueError(f"unknown table {name!r}; known: {', '.join(TABLES)}") from None
