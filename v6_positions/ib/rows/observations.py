"""Observations (lake `PositionRow`s) built from what IB sends: a streamed tick, or a holding's last known
state. The one place a Holding's fields are copied into a PositionRow."""

from __future__ import annotations

from datetime import UTC, datetime

from ib_async import Ticker

from v6_positions.ib.account.holdings import Holding
from v6_positions.ib.ib_values import choose_price, clean_implied_vol, clean_price, merge_greeks
from v6_positions.lake.rows import PositionRow


def row_from_ticker(ticker: Ticker, holding: Holding, now: datetime | None = None) -> PositionRow:
    """A streamed tick (event_time = the tick's time): prices from the Ticker, quantity and cost from what
    the account holds."""
    bid, ask = clean_price(ticker.bid), clean_price(ticker.ask)
    last, close = clean_price(ticker.last), clean_price(ticker.close)
    # Model greeks are IB's own; bid/ask/last computations fill what no model tick brought yet. A one-sided
    # quote (a far-OTM wing without a bid) is priced from IB's model price, not from a stale `last`.
    greeks = merge_greeks(ticker.modelGreeks, ticker.lastGreeks, ticker.bidGreeks, ticker.askGreeks)
    price = choose_price(bid, ask, last, close, greeks.model_price)
    market_value, unrealized = _valuation(price, holding)
    implied_vol = greeks.implied_vol
    return PositionRow(
        **holding.held_contract(),  # type: ignore[arg-type]
        position=holding.position,
        market_price=price,
        bid=bid,
        ask=ask,
        last=last,
        market_value=market_value,
        average_cost=holding.average_cost,
        unrealized_pnl=unrealized,
        delta=greeks.delta,
        gamma=greeks.gamma,
        vega=greeks.vega,
        theta=greeks.theta,
        implied_vol=implied_vol if implied_vol is not None else clean_implied_vol(ticker.impliedVolatility),
        underlying_price=greeks.underlying_price,
        source="stream",
        event_time=now or _tick_time(ticker),
        multiplier=holding.multiplier,
        prior_close=close,
        daily_pnl=_daily_pnl(price, close, holding),
    )


def row_from_holding(
    holding: Holding, now: datetime | None = None, *, source: str = "portfolio"
) -> PositionRow:
    """The last known state of a holding: the final row when a streamed position closes ("portfolio"), or a
    zero-line fetch's row ("batch")."""
    return PositionRow(
        **holding.held_contract(),  # type: ignore[arg-type]
        position=holding.position,
        market_price=holding.market_price,
        market_value=holding.market_value,
        average_cost=holding.average_cost,
        unrealized_pnl=holding.unrealized_pnl,
        source=source,
        event_time=now or datetime.now(UTC),
        multiplier=holding.multiplier,
        daily_pnl=holding.daily_pnl,
    )


def _valuation(price: float | None, holding: Holding) -> tuple[float | None, float | None]:
    """IB: marketValue = price * position * multiplier; uPnL = marketValue - avgCost * position."""
    if price is None:
        return None, None
    market_value = price * holding.position * holding.multiplier
    if holding.average_cost is None:
        return market_value, None
    return market_value, market_value - holding.average_cost * holding.position


def _daily_pnl(price: float | None, prior_close: float | None, holding: Holding) -> float | None:
    """Today's P&L of a streamed position from IB's close tick: (price - prior close) x position x
    multiplier (what IB's dailyPnL is for a position held since before today's open)."""
    if price is None or prior_close is None:
        return None
    return (price - prior_close) * holding.position * holding.multiplier


def _tick_time(ticker: Ticker) -> datetime:
    stamp = ticker.time
    if stamp is None:
        return datetime.now(UTC)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
