"""One holding: a position IB reported with its latest valuation (Holding), built from a Position, updated
by a reqPnLSingle answer, and written to the position queue as one row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ib_async import Contract, Position

from v6_positions.contracts import normalize_right, parse_multiplier
from v6_positions.ib.ib_values import clean_number, clean_price
from v6_positions.lake.rows import QueueItem, Valuation
from v6_positions.lake.schemas import PAYLOAD_COLUMNS

HoldingKey = tuple[str, int]  # (account, conid): the queue's key; one contract may sit in several accounts


@dataclass(slots=True, kw_only=True)
class Holding(Valuation):
    """One position (reqPositions) and its latest valuation (the Valuation fields: reqPnLSingle for queued
    holdings, None until IB answered one)."""

    account: str
    contract: Contract
    position: float
    average_cost: float | None = None

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

    def held_contract(self) -> dict[str, object]:
        """The account and contract as the lake's columns (schemas.HELD_CONTRACT_COLUMNS), from IB's loose
        fields: right C/P, strike None for IB's 0, expiry only when it is a full YYYYMMDD date."""
        contract = self.contract
        expiry = (contract.lastTradeDateOrContractMonth or "").strip()
        return {
            "account": self.account,
            "conid": self.conid,
            "symbol": contract.symbol or contract.localSymbol or str(self.conid),
            "sec_type": (contract.secType or "OPT").upper(),
            "right": normalize_right(contract.right),
            "strike": clean_price(contract.strike) or None,
            "expiry": expiry if len(expiry) == 8 and expiry.isdigit() else None,
        }


def holding_from_position(position: Position) -> Holding:
    return Holding(
        account=position.account,
        contract=position.contract,
        position=float(position.position),
        average_cost=clean_number(position.avgCost),
    )


def apply_pnl(
    holding: Holding,
    value: object,
    unrealized: object,
    realized: object,
    now: datetime,
    daily: object = None,
) -> bool:
    """Refresh a holding's payload from a reqPnLSingle answer (IB's market value and P&L of the position;
    `daily`: its dailyPnL).

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
    holding.daily_pnl = clean_number(daily)
    holding.payload_time = now
    return True


def queue_item(holding: Holding, priority: int) -> QueueItem:
    """The position_queue row of a holding: its contract (normalised by Holding.held_contract), its
    multiplier when a whole number, and its payload (Holding's payload fields are the queue's columns)."""
    multiplier = holding.multiplier
    return QueueItem(
        **holding.held_contract(),  # type: ignore[arg-type]
        multiplier=int(multiplier) if multiplier == int(multiplier) and multiplier > 0 else None,
        priority=priority,
        **{name: getattr(holding, name) for name in PAYLOAD_COLUMNS},  # type: ignore[arg-type]
    )
