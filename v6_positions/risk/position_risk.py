"""Each position's risk by IB's conventions, from the book (`positions`) and the registry's active legs.

IB's greeks are per share of one option; a position's are that x position x multiplier:
- delta: share-equivalents (a short call of delta 0.30, 1 lot, multiplier 100: -30 shares);
  dollar_delta = delta x the underlying's price;
- gamma: change of that share-equivalent delta per 1.00 move of the underlying;
- theta: dollars per calendar day; vega: dollars per volatility point.
A stock or future is delta one (delta 1, no gamma/theta/vega) and its underlying price is its own price.

The multiplier is the row's, else the registry leg's, else implied by IB's own valuation (market_value =
market_price x position x multiplier), else 100 for options and 1 for anything else.
`greeks_source` says where a row's greeks come from (schemas.GREEKS_SOURCES); a book that carries its own
`greeks_source` column (model greeks) keeps it. Coverage is counted on that column.
Pure polars: no IB, no Dagster.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from v6_positions.contracts import OPTION_SEC_TYPES
from v6_positions.lake.schemas import POSITION_RISK_COLUMNS, STRATEGY_REGISTRY, TableSpec

DELTA_ONE_SEC_TYPES = ("STK", "FUT")
_OPTION_MULTIPLIER = 100.0

_SPEC = TableSpec("position_risk", POSITION_RISK_COLUMNS)


def strategy_legs(registry: pl.DataFrame) -> pl.DataFrame:
    """The active legs of a registry frame (StrategyRegistry.all_legs()): conid, strategy_id, symbol,
    multiplier."""
    if registry.is_empty():
        registry = STRATEGY_REGISTRY.empty_frame()
    return registry.filter(pl.col("active")).select(
        "conid", "strategy_id", "symbol", pl.col("multiplier").cast(pl.Float64)
    )


def position_risk(book: pl.DataFrame, legs: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """One row per position of `book` (schemas.POSITION_RISK_COLUMNS); `legs` from `strategy_legs`."""
    frame = book.join(
        legs.select("conid", "strategy_id", leg_multiplier="multiplier"), on="conid", how="left"
    )
    sec_type = pl.col("sec_type").fill_null("OPT").str.to_uppercase()
    delta_one = sec_type.is_in(DELTA_ONE_SEC_TYPES)
    row_multiplier = pl.col("multiplier") if "multiplier" in frame.columns else pl.lit(None, pl.Float64)
    implied = (
        pl.when((pl.col("market_price") > 0) & (pl.col("position") != 0))
        .then((pl.col("market_value") / (pl.col("market_price") * pl.col("position"))).abs().round(6))
        .otherwise(None)
    )
    default = pl.when(sec_type.is_in(tuple(OPTION_SEC_TYPES))).then(_OPTION_MULTIPLIER).otherwise(1.0)
    frame = frame.with_columns(
        multiplier=pl.coalesce(row_multiplier, pl.col("leg_multiplier"), implied, default),
        delta_one=delta_one,
    )
    own_source = pl.col("greeks_source") if "greeks_source" in frame.columns else pl.lit("ib")
    unit = {
        "delta": pl.when("delta_one").then(1.0).otherwise(pl.col("delta")),
        **{g: pl.when("delta_one").then(0.0).otherwise(pl.col(g)) for g in ("gamma", "theta", "vega")},
    }
    frame = frame.with_columns(
        greeks_source=pl.when("delta_one")
        .then(pl.lit("delta_one"))
        .when(pl.col("delta").is_not_null())
        .then(own_source)
        .otherwise(None),
        own_underlying=pl.when("delta_one")
        .then(pl.col("market_price"))
        .otherwise(pl.col("underlying_price")),
        scale=pl.col("position") * pl.col("multiplier"),
        **{f"unit_{g}": expr for g, expr in unit.items()},
    )
    frame = frame.join(_underlying_prices(frame), on="symbol", how="left").with_columns(
        underlying_price=pl.coalesce("own_underlying", "symbol_underlying")
    )
    prior_close = pl.col("prior_close") if "prior_close" in frame.columns else pl.lit(None, pl.Float64)
    daily_pnl = pl.col("daily_pnl") if "daily_pnl" in frame.columns else pl.lit(None, pl.Float64)
    frame = frame.with_columns(
        **{g: pl.col(f"unit_{g}") * pl.col("scale") for g in unit},
        daily_pnl=pl.coalesce(daily_pnl, (pl.col("market_price") - prior_close) * pl.col("scale")),
        age_s=(pl.lit(now) - pl.col("event_time")).dt.total_microseconds() / 1e6,
    ).with_columns(dollar_delta=pl.col("delta") * pl.col("underlying_price"))
    return frame.select([pl.col(name).cast(dtype) for name, dtype in _SPEC.columns.items()]).sort(
        "account", "conid"
    )


def _underlying_prices(frame: pl.DataFrame) -> pl.DataFrame:
    """The newest known price of each underlying (an option's underlying_price or the stock's own price):
    fills the dollar delta of an option whose own row has no underlying price."""
    return (
        frame.filter(pl.col("own_underlying").is_not_null())
        .sort("event_time", nulls_last=False)
        .group_by("symbol")
        .agg(symbol_underlying=pl.col("own_underlying").last())
    )
