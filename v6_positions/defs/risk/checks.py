"""Checks on the risk snapshot (run with every refresh and by the health-check schedule).

- `strategy_legs_held_and_fresh` (ERROR): every active leg of every strategy is held and fresh in each
  account that holds the strategy (a closed leg, a leg never opened, a leg with no row in the freshness
  window fail it, named).
- `risk_coverage` (WARN): the share of the book's |market value| with greeks is at least
  `RiskLimits.min_greeks_coverage`.
- `strategy_risk_limits` (WARN): per-strategy limits on |dollar delta| and |vega| from `RiskLimits`.
They read the snapshot the refresh wrote (two small files), so they judge what the asset shows.
"""

from datetime import UTC, datetime

import dagster as dg
import polars as pl

from v6_positions.defs.metadata import age_seconds, rows_markdown
from v6_positions.defs.resources import LakeResource
from v6_positions.defs.risk.assets import strategy_risk_spec, underlying_risk_spec
from v6_positions.lake.schemas import GREEKS_SOURCES, STRATEGY_RISK, UNDERLYING_RISK
from v6_positions.risk.aggregates import coverage
from v6_positions.risk.store import read_snapshot

LIMIT_COLUMNS = ("account", "strategy_id", "symbols", "dollar_delta", "vega", "breach")


class StrategyLimit(dg.Config):
    max_abs_dollar_delta: float | None = None
    max_abs_vega: float | None = None


class RiskLimits(dg.ConfigurableResource):
    """Limits the risk checks hold the book to. Limits are optional: none set, none checked."""

    # Share (0..1) of the book's |market value| that must have greeks (from IB, a model, or delta one).
    min_greeks_coverage: float = 0.9
    # Limits for every strategy; `per_strategy` (keyed by strategy_id as text) overrides them.
    max_abs_dollar_delta: float | None = None
    max_abs_vega: float | None = None
    per_strategy: dict[str, StrategyLimit] = {}

    def limit_for(self, strategy_id: int) -> StrategyLimit:
        own = self.per_strategy.get(str(strategy_id))
        return StrategyLimit(
            max_abs_dollar_delta=_first(own and own.max_abs_dollar_delta, self.max_abs_dollar_delta),
            max_abs_vega=_first(own and own.max_abs_vega, self.max_abs_vega),
        )


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


def _snapshot_age(frame: pl.DataFrame) -> float | None:
    as_of = frame["as_of"].max() if frame.height else None
    return age_seconds(as_of, datetime.now(UTC)) if isinstance(as_of, datetime) else None


@dg.asset_check(
    asset=strategy_risk_spec.key,
    description="Every active leg of every strategy is held and fresh (no leg closed, missing or stale).",
)
def strategy_legs_held_and_fresh(lake: LakeResource) -> dg.AssetCheckResult:
    strategies = read_snapshot(lake.root_uri, STRATEGY_RISK, lake.storage_options)
    broken = strategies.filter((pl.col("legs_missing") > 0) | (pl.col("legs_stale") > 0))
    return dg.AssetCheckResult(
        passed=broken.is_empty(),
        metadata={
            "strategies": strategies["strategy_id"].n_unique(),
            "strategies_incomplete": broken["strategy_id"].n_unique(),
            "legs_missing": int(strategies["legs_missing"].sum()),
            "legs_stale": int(strategies["legs_stale"].sum()),
            "incomplete": ", ".join(
                f"strategy {s} in {a or 'no account'}: {m} missing, {st} stale"
                for a, s, m, st in broken.select("account", "strategy_id", "legs_missing", "legs_stale")
                .head(20)
                .iter_rows()
            )
            or "none",
            "snapshot_age_s": _snapshot_age(strategies),
        },
    )


@dg.asset_check(
    asset=underlying_risk_spec.key,
    description="The share of the book's |market value| with greeks is at least the configured minimum.",
)
def risk_coverage(lake: LakeResource, risk_limits: RiskLimits) -> dg.AssetCheckResult:
    underlyings = read_snapshot(lake.root_uri, UNDERLYING_RISK, lake.storage_options)
    share = coverage(underlyings)
    by_source = {
        f"abs_market_value_greeks_{source}": float(underlyings[f"abs_market_value_greeks_{source}"].sum())
        for source in GREEKS_SOURCES
    }
    return dg.AssetCheckResult(
        passed=share is None or share >= risk_limits.min_greeks_coverage,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "coverage_pct": None if share is None else round(100.0 * share, 2),
            "min_coverage_pct": round(100.0 * risk_limits.min_greeks_coverage, 2),
            "positions": int(underlyings["positions"].sum()),
            "positions_with_greeks": int(underlyings["positions_with_greeks"].sum()),
            "abs_market_value": float(underlyings["abs_market_value"].sum()),
            **by_source,
            "snapshot_age_s": _snapshot_age(underlyings),
        },
    )


@dg.asset_check(
    asset=strategy_risk_spec.key,
    description="Each strategy's |dollar delta| and |vega| stay within the configured limits (if any).",
)
def strategy_risk_limits(lake: LakeResource, risk_limits: RiskLimits) -> dg.AssetCheckResult:
    strategies = read_snapshot(lake.root_uri, STRATEGY_RISK, lake.storage_options)
    breaches = []
    checked = 0
    for row in strategies.filter(pl.col("account").is_not_null()).iter_rows(named=True):
        limit = risk_limits.limit_for(row["strategy_id"])
        for measure, bound in (("dollar_delta", limit.max_abs_dollar_delta), ("vega", limit.max_abs_vega)):
            if bound is None:
                continue
            checked += 1
            value = row[measure]
            if value is not None and abs(value) > bound:
                breaches.append({**row, "breach": f"|{measure}| {abs(value):,.0f} > {bound:,.0f}"})
    table = pl.DataFrame(breaches, infer_schema_length=None) if breaches else pl.DataFrame()
    return dg.AssetCheckResult(
        passed=not breaches,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "limits_checked": checked,
            "breaches": len(breaches),
            "breaching": rows_markdown(table, columns=LIMIT_COLUMNS, newest_by="") if breaches else "none",
        },
    )
