"""Risk assets: `strategy_risk` and `underlying_risk` (refreshed every minute from `positions` and the
registry) and `book_eod` (the book and its risk at each day's close, one daily partition per day).

Each refresh reports its totals as numeric metadata, so an asset's Plots tab draws the day, and a small
table of the riskiest rows (largest |dollar delta|). The rows themselves are in the lake: `strategy_risk` /
`underlying_risk` (the current snapshot) and `*_history` (every refresh, by date).
"""

from collections.abc import Iterator
from datetime import date

import dagster as dg
import polars as pl

from v6_positions.defs.assets import (
    KINDS,
    OWNERS,
    positions,
    strategy_registry,
)
from v6_positions.defs.metadata import rows_markdown
from v6_positions.defs.resources import HealthThresholds, LakeResource
from v6_positions.defs.risk.underlying_closes import CLOSES_KEY, latest_closes
from v6_positions.lake.registry import StrategyRegistry
from v6_positions.lake.schemas import BOOK_EOD, STRATEGY_RISK_EOD, UNDERLYING_RISK_EOD
from v6_positions.risk.aggregates import coverage, riskiest, totals
from v6_positions.risk.eod import DEFAULT_LOOKBACK_DAYS, NEW_YORK, day_close
from v6_positions.risk.model_greeks import ModelGreeksCounts
from v6_positions.risk.position_risk import strategy_legs
from v6_positions.risk.refresh import refresh_risk
from v6_positions.risk.store import replace_day

# One asset group with the book's assets: the global lineage draws a single group expanded, so the risk
# assets show beside `positions` at first sight (several groups are drawn collapsed).
GROUP = "positions"
STRATEGY_COLUMNS = ("account", "strategy_id", "symbols", "legs_held", "legs_missing", "legs_stale",
                    "delta", "dollar_delta", "theta", "vega", "daily_pnl")  # fmt: skip
UNDERLYING_COLUMNS = ("account", "underlying", "positions", "coverage", "delta", "dollar_delta", "gamma",
                      "theta", "vega", "market_value", "daily_pnl")  # fmt: skip
# Daily partitions in New York time (the close is 16:00 there); today's exists (end_offset=1) so the
# schedule builds it right after the close.
eod_days = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone=NEW_YORK.key, end_offset=1)

strategy_risk_spec = dg.AssetSpec(
    "strategy_risk",
    deps=[positions, strategy_registry],
    description="Per account x strategy_id (the registry's active legs): legs held, missing and stale, net "
    "greeks by IB's conventions (delta in share-equivalents and dollars, gamma, theta per day, vega per vol "
    "point), market value, unrealized and daily P&L, oldest leg. Delta tables strategy_risk (now) and "
    "strategy_risk_history (every refresh, by date).",
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
)
underlying_risk_spec = dg.AssetSpec(
    "underlying_risk",
    deps=[positions, CLOSES_KEY],
    description="Per account x underlying, every position: net greeks, dollar delta, market value, P&L, and "
    "coverage: positions and |market value| with greeks, by source (ib, model, delta_one). Delta tables "
    "underlying_risk (now) and underlying_risk_history (every refresh, by date).",
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
)


@dg.multi_asset(specs=[strategy_risk_spec, underlying_risk_spec], name="risk_refresh")
def risk_refresh(
    context: dg.AssetExecutionContext, lake: LakeResource, thresholds: HealthThresholds
) -> Iterator[dg.MaterializeResult]:
    snapshot = refresh_risk(
        lake.root_uri,
        thresholds.freshness_window_s,
        lake.storage_options,
        rate=lake.settings.risk_free_rate,
        underlying_closes=latest_closes(context.instance),
    )
    strategies, underlyings = snapshot.strategies, snapshot.underlyings
    model = snapshot.model_greeks
    context.log.info(
        f"risk of {snapshot.positions.height} positions: {strategies.height} strategy rows, "
        f"{underlyings.height} underlying rows; model greeks for {model.computed} options, "
        f"{model.missing} without: {model.missing_by_reason()}"
    )
    yield dg.MaterializeResult(asset_key=strategy_risk_spec.key, metadata=strategy_metadata(strategies))
    yield dg.MaterializeResult(
        asset_key=underlying_risk_spec.key,
        metadata={**underlying_metadata(underlyings), **model_greeks_metadata(snapshot.model_greeks)},
    )


def strategy_metadata(strategies: pl.DataFrame) -> dict[str, object]:
    held = strategies.filter(pl.col("account").is_not_null())
    return {
        **_floats(totals(strategies)),
        "strategies": strategies["strategy_id"].n_unique(),
        "legs_missing": int(strategies["legs_missing"].sum()),
        "legs_stale": int(strategies["legs_stale"].sum()),
        "max_leg_age_s": dg.MetadataValue.float(round(float(held["max_leg_age_s"].max() or 0.0), 1)),
        "riskiest": rows_markdown(riskiest(strategies), columns=STRATEGY_COLUMNS, newest_by=""),
    }


def underlying_metadata(underlyings: pl.DataFrame) -> dict[str, object]:
    share = coverage(underlyings)
    return {
        **_floats(totals(underlyings)),
        "positions": int(underlyings["positions"].sum()),
        "coverage_pct": dg.MetadataValue.float(round(100.0 * share, 2) if share is not None else 0.0),
        "riskiest": rows_markdown(riskiest(underlyings), columns=UNDERLYING_COLUMNS, newest_by=""),
    }


def model_greeks_metadata(counts: ModelGreeksCounts) -> dict[str, object]:
    """How the options without IB greeks fared: modelled, or why not (each reason counted)."""
    return {
        "model_greeks": counts.computed,
        "model_greeks_at_intrinsic": counts.at_intrinsic,  # of model_greeks: marks at their floor
        "model_greeks_missing": counts.missing,
        "model_greeks_missing_by_reason": dg.MetadataValue.json(counts.missing_by_reason()),
    }


def _floats(values: dict[str, float]) -> dict[str, dg.FloatMetadataValue]:
    return {name: dg.MetadataValue.float(round(value, 2)) for name, value in values.items()}


class EodConfig(dg.Config):
    # A position whose newest row is older than this many days before the close is not counted.
    lookback_days: int = DEFAULT_LOOKBACK_DAYS


@dg.asset(
    partitions_def=eod_days,
    # The book at a past close is rebuilt from the history `positions` is kept from (the history tables are
    # partitioned by contract, not by day, so the book stands for them in the lineage).
    deps=[positions, strategy_registry],
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="The book and its risk at each day's close (16:00 New York), rebuilt from the position "
    "history: Delta tables book_eod (one row per position), strategy_risk_eod and underlying_risk_eod, one "
    "partition per date. A backfill rebuilds any past day the history still holds (in one run).",
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
)
def book_eod(
    context: dg.AssetExecutionContext, config: EodConfig, lake: LakeResource, thresholds: HealthThresholds
) -> dg.MaterializeResult:
    legs = strategy_legs(StrategyRegistry(lake.root_uri, lake.storage_options).all_legs())
    for key in context.partition_keys:
        day = date.fromisoformat(key)
        close = day_close(
            lake.root_uri,
            day,
            legs,
            thresholds.freshness_window_s,
            config.lookback_days,
            lake.storage_options,
        )
        for spec, frame in (
            (BOOK_EOD, close.book),
            (STRATEGY_RISK_EOD, close.strategies),
            (UNDERLYING_RISK_EOD, close.underlyings),
        ):
            replace_day(lake.root_uri, spec, day, frame.with_columns(close_time=pl.lit(close.close_time)),
                        lake.storage_options)  # fmt: skip
        context.log.info(f"{key}: {close.book.height} positions at the close ({close.close_time:%H:%M} UTC)")
        context.add_asset_metadata(
            {
                "positions": close.book.height,
                "close_time": close.close_time.isoformat(),
                **_floats(totals(close.underlyings)),
                "strategies": strategy_metadata(close.strategies)["riskiest"],
                "underlyings": underlying_metadata(close.underlyings)["riskiest"],
            },
            partition_key=key,
        )
    return dg.MaterializeResult()
