"""Position risk summed per strategy (account x strategy_id) and per underlying (account x symbol).

- `strategy_risk`: one row per account holding a leg of an active strategy (a strategy no account holds any
  leg of gets one row with account null). Legs are the registry's active legs; a leg not held in the account
  is missing, a held leg whose newest row is older than `stale_after_s` is stale.
- `underlying_risk`: one row per account and underlying, every position, with coverage: how many positions
  and how much |market value| have greeks, in total and per `greeks_source`.
Sums skip unknown values (a leg without greeks adds nothing to delta); the counts say how much is known.
Pure polars: no IB, no Dagster.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from v6_positions.lake.schemas import (
    GREEKS_SOURCES,
    RISK_MEASURES,
    STRATEGY_RISK_COLUMNS,
    UNDERLYING_RISK_COLUMNS,
)

_SUMS = [pl.col(name).sum() for name in RISK_MEASURES]
_HAS_GREEKS = pl.col("greeks_source").is_not_null()


def strategy_risk(
    risk: pl.DataFrame, legs: pl.DataFrame, as_of: datetime, stale_after_s: float
) -> pl.DataFrame:
    """`risk`: position_risk rows; `legs`: position_risk.strategy_legs rows (the active legs)."""
    per_strategy = legs.group_by("strategy_id").agg(
        legs=pl.len(), symbols=pl.col("symbol").unique().sort().str.join(",")
    )
    held = (
        risk.filter(pl.col("strategy_id").is_not_null())
        .group_by("account", "strategy_id")
        .agg(
            *_SUMS,
            legs_held=pl.col("conid").n_unique(),
            legs_stale=(pl.col("age_s").is_null() | (pl.col("age_s") > stale_after_s)).sum(),
            legs_with_greeks=_HAS_GREEKS.sum(),
            max_leg_age_s=pl.col("age_s").max(),
        )
    )
    frame = per_strategy.join(held, on="strategy_id", how="left").with_columns(
        pl.col("legs_held", "legs_stale", "legs_with_greeks").fill_null(0),
    )
    frame = frame.with_columns(legs_missing=pl.col("legs") - pl.col("legs_held"), as_of=pl.lit(as_of))
    return _conform(frame, STRATEGY_RISK_COLUMNS).sort("strategy_id", "account", nulls_last=True)


def underlying_risk(risk: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    abs_value = pl.col("market_value").abs()
    frame = (
        risk.sort("event_time", nulls_last=False)
        .group_by("account", pl.col("symbol").alias("underlying"))
        .agg(
            *_SUMS,
            underlying_price=pl.col("underlying_price").drop_nulls().last(),
            positions=pl.len(),
            abs_market_value=abs_value.sum(),
            positions_with_greeks=_HAS_GREEKS.sum(),
            abs_market_value_with_greeks=abs_value.filter(_HAS_GREEKS).sum(),
            **{f"positions_greeks_{s}": (pl.col("greeks_source") == s).sum() for s in GREEKS_SOURCES},
            **{
                f"abs_market_value_greeks_{s}": abs_value.filter(pl.col("greeks_source") == s).sum()
                for s in GREEKS_SOURCES
            },
            max_age_s=pl.col("age_s").max(),
        )
        .with_columns(
            coverage=_share("abs_market_value_with_greeks", "abs_market_value"), as_of=pl.lit(as_of)
        )
    )
    return _conform(frame, UNDERLYING_RISK_COLUMNS).sort("account", "underlying")


def coverage(underlying: pl.DataFrame) -> float | None:
    """Share of the book's |market value| with greeks (any source); None when nothing has a value."""
    total = underlying["abs_market_value"].sum()
    return None if not total else float(underlying["abs_market_value_with_greeks"].sum()) / float(total)


def totals(frame: pl.DataFrame) -> dict[str, float]:
    """The risk measures summed over a strategy or underlying frame (0.0 for an empty one)."""
    return {f"total_{name}": float(frame[name].sum() or 0.0) for name in RISK_MEASURES}


def riskiest(frame: pl.DataFrame, limit: int = 10) -> pl.DataFrame:
    """The rows with the largest |dollar delta| first."""
    return frame.sort(pl.col("dollar_delta").abs(), descending=True, nulls_last=True).head(limit)


def _share(part: str, whole: str) -> pl.Expr:
    return pl.when(pl.col(whole) > 0).then(pl.col(part) / pl.col(whole)).otherwise(None)


def _conform(frame: pl.DataFrame, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    return frame.select([pl.col(name).cast(dtype) for name, dtype in columns.items()])
