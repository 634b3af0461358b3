"""What the account holds, as this process last heard it from IB (positions + portfolio payloads)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from ib_async import Contract, Position

from v6_positions.ib.values import clean_number

HoldingKey = tuple[str, int]  # (account, conid): the queue's key; one contract may sit in several accounts


@dataclass(slots=True)
class Holding:
    account: str
    contract: Contract
    position: float
    average_cost: float | None = None
    # Latest valuation (reqPnLSingle for queued holdings), None until IB answered one.
    market_price: float | None = None
    market_value: float | None = None
    unrealized_pnl: float | None = None
    realized_pnl: float | None = None
    payload_time: datetime | None = None

    @property
    def key(self) -> HoldingKey:
        return (self.account, self.conid)

    @property
    def conid(self) -> int:
        return int(self.contract.conId)

    @property
    def symbol(self) -> str:
        return self.contract.symbol

    @property
    def sec_type(self) -> str:
        return self.contract.secType

    @property
    def multiplier(self) -> float:
        return parse_multiplier(self.contract.multiplier, self.contract.secType)


def parse_multiplier(raw: object, sec_type: str = "OPT") -> float:
    """IB sends the multiplier as text ("100", "" for stocks)."""
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        return 100.0 if sec_type in ("OPT", "FOP") else 1.0
    return value


def holding_from_position(position: Position) -> Holding:
    return Holding(
        account=position.account,
        contract=position.contract,
        position=float(position.position),
        average_cost=clean_number(position.avgCost),
    )


def apply_pnl(holding: Holding, value: object, unrealized: object, realized: object, now: datetime) -> bool:
    """Refresh a holding's payload from a reqPnLSingle answer (IB's market value and P&L of the position).

    Returns False, leaving the payload as it was, when IB sent no usable value (sentinel, NaN)."""
    market_value = clean_number(value)
    if market_value is None:
        return False
    scale = holding.position * holding.multiplier
    holding.market_value = market_value
    # IB marks per share: marketValue = price * position * multiplier. Price is never negative.
    holding.market_price = abs(market_value / scale) if scale else None
    holding.unrealized_pnl = clean_number(unrealized)
    holding.realized_pnl = clean_number(realized)
    holding.payload_time = now
    return True
