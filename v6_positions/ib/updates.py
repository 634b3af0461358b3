"""`PositionUpdate`: one observation of a held contract, and how it is built from ib_async objects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from ib_async import Ticker

from v6_positions.ib.holdings import Holding, parse_multiplier
from v6_positions.ib.values import choose_price, clean_implied_vol, clean_price, merge_greeks

UpdateSource = Literal["stream", "portfolio"]


@dataclass(slots=True)
class PositionUpdate:
    # The seed's fields, kept in the seed's order.
    conid: int
    symbol: str
    right: str
    position: float
    market_price: float | None
    market_value: float | None
    average_cost: float | None
    unrealized_pnl: float | None
    timestamp: datetime
    # Added.
    account: str = ""
    strike: float | None = None
    expiry: str | None = None
    bid: float | None = None
    ask: float | None = None
    last: float | None = None
    delta: float | None = None
    gamma: float | None = None
    vega: float | None = None
    theta: float | None = None
    implied_vol: float | None = None
    underlying_price: float | None = None
    sec_type: str = "OPT"
    source: UpdateSource = "stream"


def update_from_ticker(ticker: Ticker, holding: Holding, now: datetime | None = None) -> PositionUpdate:
    """A streamed tick: prices from the Ticker, quantity and cost from what the account holds."""
    bid, ask = clean_price(ticker.bid), clean_price(ticker.ask)
    last, close = clean_price(ticker.last), clean_price(ticker.close)
    # Model greeks are IB's own; bid/ask/last computations fill what no model tick brought yet. A one-sided
    # quote (a far-OTM wing without a bid) is priced from IB's model price, not from a stale `last`.
    greeks = merge_greeks(ticker.modelGreeks, ticker.lastGreeks, ticker.bidGreeks, ticker.askGreeks)
    price = choose_price(bid, ask, last, close, greeks.model_price)
    market_value, unrealized = _valuation(price, holding)
    contract = holding.contract
    return PositionUpdate(
        conid=holding.conid,
        symbol=contract.symbol,
        right=contract.right,
        position=holding.position,
        market_price=price,
        market_value=market_value,
        average_cost=holding.average_cost,
        unrealized_pnl=unrealized,
        timestamp=now or _tick_time(ticker),
        account=holding.account,
        strike=clean_price(contract.strike) or None,
        expiry=contract.lastTradeDateOrContractMonth or None,
        bid=bid,
        ask=ask,
        last=last,
        delta=greeks.delta,
        gamma=greeks.gamma,
        vega=greeks.vega,
        theta=greeks.theta,
        implied_vol=greeks.implied_vol if greeks.implied_vol is not None else clean_implied_vol(
            ticker.impliedVolatility
        ),
        underlying_price=greeks.underlying_price,
        sec_type=contract.secType,
        source="stream",
    )


def update_from_holding(holding: Holding, now: datetime | None = None) -> PositionUpdate:
    """The last known state of a holding (used for the final row when a streamed position closes)."""
    contract = holding.contract
    return PositionUpdate(
        conid=holding.conid,
        symbol=contract.symbol,
        right=contract.right,
        position=holding.position,
        market_price=holding.market_price,
        market_value=holding.market_value,
        average_cost=holding.average_cost,
        unrealized_pnl=holding.unrealized_pnl,
        timestamp=now or datetime.now(UTC),
        account=holding.account,
        strike=clean_price(contract.strike) or None,
        expiry=contract.lastTradeDateOrContractMonth or None,
        sec_type=contract.secType,
        source="portfolio",
    )


def _valuation(price: float | None, holding: Holding) -> tuple[float | None, float | None]:
    """IB: marketValue = price * position * multiplier; uPnL = marketValue - avgCost * position."""
    if price is None:
        return None, None
    market_value = price * holding.position * parse_multiplier(
        holding.contract.multiplier, holding.contract.secType
    )
    if holding.average_cost is None:
        return market_value, None
    return market_value, market_value - holding.average_cost * holding.position


def _tick_time(ticker: Ticker) -> datetime:
    stamp = ticker.time
    if stamp is None:
        return datetime.now(UTC)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
