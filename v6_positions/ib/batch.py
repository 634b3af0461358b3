"""Zero-line position fetch for the batch path when the stream is down.

reqPositions + reqPnLSingle consume no market-data line, and this client never asks for account updates,
so it cannot take that (one-per-gateway) subscription from the stream. Runs on its own clientId.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime

from ib_async import IB, PnLSingle

from v6_positions.config import Settings
from v6_positions.ib.holdings import parse_multiplier
from v6_positions.ib.session import BATCH_FETCH, IBSession, SessionConfig
from v6_positions.ib.values import clean_number
from v6_positions.lake.history import PositionRow

log = logging.getLogger(__name__)


def fetch_positions_zero_line(
    settings: Settings,
    client_id: int,
    *,
    conids: Iterable[int] | None = None,
    timeout_s: float = 15.0,
) -> list[PositionRow]:
    """Synchronous wrapper (Dagster ops call this); see `fetch_positions_zero_line_async`."""
    fetch = fetch_positions_zero_line_async(settings, client_id, conids=conids, timeout_s=timeout_s)
    return asyncio.run(fetch)


async def fetch_positions_zero_line_async(
    settings: Settings,
    client_id: int,
    *,
    conids: Iterable[int] | None = None,
    timeout_s: float = 15.0,
) -> list[PositionRow]:
    """Rows (source="batch") for the held, non-zero positions, optionally only `conids`.

    Market value and unrealized P&L come from reqPnLSingle; a position whose P&L did not arrive within
    `timeout_s` still gets a row with position and average cost (values None), never invented numbers.
    """
    config = replace(SessionConfig.from_settings(settings), client_id=client_id, client_id_count=5)
    session = IBSession(config, IB(), fetch=BATCH_FETCH)
    await session.connect()
    ib = session.ib
    try:
        wanted = set(conids) if conids is not None else None
        positions = [
            p for p in ib.positions()
            if p.position != 0
            and (not settings.ib_account or p.account == settings.ib_account)
            and (wanted is None or p.contract.conId in wanted)
        ]
        pnls = {
            (p.account, p.contract.conId): ib.reqPnLSingle(p.account, "", p.contract.conId) for p in positions
        }
        await _wait_for_values(ib, list(pnls.values()), timeout_s)
        now = datetime.now(UTC)
        rows = [_row(p, pnls[(p.account, p.contract.conId)], now) for p in positions]
        for account, conid in pnls:
            ib.cancelPnLSingle(account, "", conid)
        log.info("zero-line fetch: %d positions on clientId %s", len(rows), session.client_id)
        return rows
    finally:
        await session.close()


async def _wait_for_values(ib: IB, pnls: list[PnLSingle], timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while any(math.isnan(p.value) for p in pnls):
        left = deadline - loop.time()
        if left <= 0:
            missing = sum(1 for p in pnls if math.isnan(p.value))
            log.warning("zero-line fetch: P&L missing for %d of %d positions after %.0fs", missing, len(pnls),
                        timeout_s)
            return
        try:
            await asyncio.wait_for(ib.pnlSingleEvent, min(left, 0.5))
        except TimeoutError:
            pass


def _row(position, pnl: PnLSingle, now: datetime) -> PositionRow:
    contract = position.contract
    quantity = float(position.position)
    value = clean_number(pnl.value)
    multiplier = parse_multiplier(contract.multiplier, contract.secType)
    price = value / (quantity * multiplier) if value is not None and quantity else None
    expiry = contract.lastTradeDateOrContractMonth or None
    return PositionRow(
        account=position.account,
        conid=int(contract.conId),
        symbol=contract.symbol,
        sec_type=contract.secType,
        right=contract.right or None,
        strike=contract.strike or None,
        expiry=expiry if expiry and len(expiry) == 8 else None,
        position=quantity,
        market_price=abs(price) if price is not None else None,
        market_value=value,
        average_cost=clean_number(position.avgCost),
        unrealized_pnl=clean_number(pnl.unrealizedPnL),
        source="batch",
        event_time=now,
    )
