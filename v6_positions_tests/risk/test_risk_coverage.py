"""Risk coverage of the demo's book over ten minutes of the demo's market, read as the pipeline reads it.

The simulator's market walks at the pace `v6-positions demo` gives it, and its own valuation prices every
position. The queued positions are valued one after another, as the stream's sweep of reqPnLSingle answers
values them (~90 s for the demo's 204 queued positions, measured in `make demo`); the held stocks are valued
in the same sweep, the streamed condor legs carry IB's greeks and the underlying price of the newest tick, and
the underlyings nothing else prices get a daily bar's close when `underlying_closes` asks for it. Every
minute the risk refresh runs on the book as the lake holds it: the share of |market value| with greeks (IB's
or the model's) stays >= 95 %.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
from ib_async import Contract

from v6_positions.commands.launch import DEMO_STEP_MINUTES, DEMO_TICK_INTERVAL_S, register_demo_legs
from v6_positions.defs.risk.underlying_closes import REFRESH_AFTER_S
from v6_positions.ib.account.holdings import Holding, apply_pnl
from v6_positions.ib.rows.observations import row_from_holding
from v6_positions.lake.history import write_rows
from v6_positions.lake.positions import read_positions
from v6_positions.lake.registry import StrategyRegistry
from v6_positions.lake.rows import PositionRow
from v6_positions.risk.aggregates import coverage
from v6_positions.risk.refresh import compute_risk
from v6_positions.risk.underlying_prices import symbols_without_price
from v6_positions.simulator import load_book
from v6_positions.simulator.market import Market
from v6_positions.simulator.stats import SimStats
from v6_positions.simulator.valuation import Valuation

SWEEP_S = 90.0  # one valuation of every queued position, one after another
REFRESH_S = 60.0  # the risk refresh's schedule
STRETCH_S = 600.0
STALE_AFTER_S = 300.0
START = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)  # 10:00 New York: the market is open


def _holding(held) -> Holding:
    c = held.contract
    multiplier = str(c.multiplier) if c.sec_type == "OPT" else ""
    contract = Contract(conId=c.conid, symbol=c.symbol, secType=c.sec_type, strike=c.strike, right=c.right,
                        lastTradeDateOrContractMonth=c.expiry, multiplier=multiplier,
                        currency=c.currency)  # fmt: skip
    return Holding(account=held.account, contract=contract, position=held.position,
                   average_cost=held.avg_cost)  # fmt: skip


def _streamed_row(valuation: Valuation, held, now: datetime) -> PositionRow:
    """A streamed leg as the stream stores a tick: IB's (the simulator's) greeks and underlying price."""
    c = held.contract
    quote = valuation.market.quote(c)
    price, value, unrealized = valuation.value(held)
    return PositionRow(account=held.account, conid=c.conid, symbol=c.symbol, sec_type=c.sec_type,
                       right=c.right, strike=c.strike, expiry=c.expiry, position=held.position,
                       market_price=price, market_value=value, average_cost=held.avg_cost,
                       unrealized_pnl=unrealized,
                       delta=quote.greeks.delta, gamma=quote.greeks.gamma, vega=quote.greeks.vega,
                       theta=quote.greeks.theta, implied_vol=quote.greeks.implied_vol,
                       underlying_price=quote.und_price, source="stream", event_time=now,
                       multiplier=float(c.multiplier), prior_close=quote.close)  # fmt: skip


def test_the_demo_book_keeps_risk_coverage_over_ten_minutes_of_the_demos_market(lake_root: str) -> None:
    book = load_book("demo")
    register_demo_legs(lake_root, book=book)
    registry = StrategyRegistry(lake_root).all_legs()
    valuation = Valuation(book, Market(book, seed=0, step_minutes=DEMO_STEP_MINUTES), SimStats())
    streamed = sorted(key for key, held in book.positions.items() if held.strategy_id is not None)
    queued = sorted(book.positions.keys() - set(streamed))
    # Each queued position's moment in the sweep: spread evenly, in conid order.
    slot = {key: i * SWEEP_S / len(queued) for i, key in enumerate(queued)}
    closes: dict[str, tuple[float, float]] = {}  # symbol -> (close, asked at), as `underlying_closes` keeps
    ticks_per_refresh = round(REFRESH_S / DEMO_TICK_INTERVAL_S)
    shares = []
    pending: dict[tuple[str, int], PositionRow] = {}  # the newest valuation of each, for the minute's batch
    true_delta: dict[int, float] = {}  # the simulator's delta at the moment of each option's mark
    delta_errors: list[float] = []
    for tick in range(1, round(STRETCH_S / DEMO_TICK_INTERVAL_S) + 1):
        valuation.market.step()
        t = tick * DEMO_TICK_INTERVAL_S
        now = START + timedelta(seconds=t)
        for key in (k for k in queued if (t - slot[k]) % SWEEP_S < DEMO_TICK_INTERVAL_S):
            held = book.positions[key]
            holding = _holding(held)
            _, value, unrealized = valuation.value(held)
            assert apply_pnl(holding, value, unrealized, 0.0, now)
            pending[key] = row_from_holding(holding, now, source="batch")
            if held.contract.sec_type == "OPT":
                true_delta[held.contract.conid] = valuation.market.quote(held.contract).greeks.delta
        if tick % ticks_per_refresh:
            continue
        write_rows(lake_root, "queued_positions", list(pending.values()))
        pending.clear()
        legs = [_streamed_row(valuation, book.positions[key], now) for key in streamed]
        write_rows(lake_root, "streamed_positions", legs)
        positions = read_positions(lake_root)
        for symbol in symbols_without_price(positions):  # the closes asked at this refresh
            if t - closes.get(symbol, (0.0, -1e9))[1] > REFRESH_AFTER_S:
                closes[symbol] = (valuation.market.day_bar(symbol)[3], t)
        risk = compute_risk(positions, registry, now, STALE_AFTER_S,
                            underlying_closes={s: c for s, (c, _) in closes.items()})  # fmt: skip
        shares.append((round(t), coverage(risk.underlyings), risk.model_greeks.missing_by_reason()))
        modelled = risk.positions.filter(pl.col("greeks_source") == "model")
        per_share = modelled["delta"] / (modelled["position"] * modelled["multiplier"])
        truth = modelled["conid"].replace_strict(true_delta, return_dtype=pl.Float64)
        delta_errors += (per_share - truth).abs().to_list()
    assert len(shares) == STRETCH_S / REFRESH_S
    assert all(share >= 0.95 for _, share, _ in shares), shares
    # ... and what is modelled describes the market of its mark: the simulator's delta at that moment, but for
    # what the underlying moved between the mark's moment and its price's (up to the sweep's 90 s)
    errors = np.array(delta_errors)
    assert np.percentile(errors, 90) < 0.02 and errors.max() < 0.15, np.sort(errors)[-5:]
