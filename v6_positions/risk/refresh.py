"""One risk refresh: the book and the registry read once, position risk, the strategy and underlying rows
written as the current snapshot and appended to their history. What the `strategy_risk` /
`underlying_risk` assets run every minute (and what benchmarks/risk_bench.py times).

Reads only `positions` (one row per held contract) and the registry: its cost follows the book, never the
history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

from v6_positions.lake.positions import read_positions
from v6_positions.lake.registry import StrategyRegistry
from v6_positions.lake.schemas import STRATEGY_RISK, UNDERLYING_RISK
from v6_positions.risk.aggregates import strategy_risk, underlying_risk
from v6_positions.risk.model_greeks import DEFAULT_RATE, ModelGreeksCounts, with_model_greeks
from v6_positions.risk.position_risk import position_risk, strategy_legs
from v6_positions.risk.store import write_snapshot
from v6_positions.risk.underlying_prices import with_underlying_prices


@dataclass(slots=True, frozen=True)
class RiskSnapshot:
    as_of: datetime
    positions: pl.DataFrame  # position_risk rows
    strategies: pl.DataFrame
    underlyings: pl.DataFrame
    model_greeks: ModelGreeksCounts = field(default_factory=ModelGreeksCounts)  # the rows IB gave no greeks


def compute_risk(
    book: pl.DataFrame,
    registry: pl.DataFrame,
    as_of: datetime,
    stale_after_s: float,
    *,
    rate: float = DEFAULT_RATE,
    underlying_closes: Mapping[str, float] | None = None,
) -> RiskSnapshot:
    """Risk of `book` (`positions` rows) with the strategies of `registry` (all valid registry rows).

    Options IB sent no greeks for (queued ones) get model greeks from their mark and their underlying's
    price (a streamed leg's, a held stock's, else `underlying_closes`): greeks_source "model"."""
    legs = strategy_legs(registry)
    modelled = with_model_greeks(with_underlying_prices(book, underlying_closes), now=as_of, rate=rate)
    risk = position_risk(modelled.frame, legs, as_of)
    return RiskSnapshot(
        as_of=as_of,
        positions=risk,
        strategies=strategy_risk(risk, legs, as_of, stale_after_s),
        underlyings=underlying_risk(risk, as_of),
        model_greeks=modelled.counts,
    )


def refresh_risk(
    root_uri: str,
    stale_after_s: float,
    storage_options: dict[str, str] | None = None,
    now: datetime | None = None,
    *,
    rate: float = DEFAULT_RATE,
    underlying_closes: Mapping[str, float] | None = None,
) -> RiskSnapshot:
    """Compute the risk of the current book and commit it (snapshot + history of both tables)."""
    as_of = now or datetime.now(UTC)
    registry = StrategyRegistry(root_uri, storage_options).all_legs()
    book = read_positions(root_uri, storage_options)
    snapshot = compute_risk(
        book, registry, as_of, stale_after_s, rate=rate, underlying_closes=underlying_closes
    )
    write_snapshot(root_uri, STRATEGY_RISK, snapshot.strategies, as_of, storage_options)
    write_snapshot(root_uri, UNDERLYING_RISK, snapshot.underlyings, as_of, storage_options)
    return snapshot
