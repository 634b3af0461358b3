"""Zero-line position fetch for the batch path when the stream is down.

reqPositions + reqPnLSingle consume no market-data line, and this client never asks for account updates,
so it cannot take that (one-per-gateway) subscription from anyone. Runs on a helper clientId
(`client_ids.py`), never the stream's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from ib_async import IB, PnLSingle, Position

from v6_positions.config import Settings
from v6_positions.ib.account.holdings import apply_pnl, holding_from_position
from v6_positions.ib.account.position_list import PositionList
from v6_positions.ib.connection.client_ids import helper_id_range
from v6_positions.ib.connection.session import BATCH_FETCH, IBSession, SessionConfig
from v6_positions.ib.rows.observations import row_from_holding
from v6_positions.lake.rows import PositionRow

log = logging.getLogger(__name__)

# reqPnLSingle requests per paced chunk: below IB's 50 messages/s, with room for the handful of messages
# the connection itself sends.
PACED_CHUNK = 40


@dataclass(slots=True)
class ZeroLineFetch:
    """What a zero-line fetch got: rows of the wanted held contracts, and IB's whole position list (what
    says which of the others are closed; see `ib/account/position_list.py`)."""

    rows: list[PositionRow]
    positions: PositionList


def fetch_positions_zero_line(
    settings: Settings,
    client_id: int,
    *,
    conids: Iterable[int] | None = None,
    timeout_s: float = 15.0,
) -> ZeroLineFetch:
    """Synchronous wrapper (Dagster ops call this); see `fetch_positions_zero_line_async`."""
    fetch = fetch_positions_zero_line_async(settings, client_id, conids=conids, timeout_s=timeout_s)
    return asyncio.run(fetch)


def fetch_position_list(settings: Settings, client_id: int) -> PositionList:
    """IB's complete position list (reqPositions only: no P&L request, no line), on a helper clientId."""
    return asyncio.run(fetch_position_list_async(settings, client_id))


async def fetch_position_list_async(settings: Settings, client_id: int) -> PositionList:
    session = await _helper_session(settings, client_id)
    try:
        return _position_list(session.ib, settings)
    finally:
        await session.close()


async def _helper_session(settings: Settings, client_id: int) -> IBSession:
    first, count = helper_id_range(settings, client_id)
    config = replace(SessionConfig.from_settings(settings), client_id=first, client_id_count=count)
    session = IBSession(config, IB(), fetch=BATCH_FETCH)
    await session.connect()  # raises when positions did not arrive: a timed-out list is not "no positions"
    return session


def _position_list(ib: IB, settings: Settings) -> PositionList:
    """The answer the connect waited for (positions up to positionEnd), checked against V6_IB_ACCOUNT."""
    answer = PositionList.from_answer(
        ib.positions(), ib.managedAccounts(), settings.ib_account, datetime.now(UTC)
    )
    log.info(
        "IB lists %d positions in %d followed account(s)%s",
        len(answer.held), len(answer.followed),
        f"; nothing listed for {', '.join(answer.unlisted_accounts())}" if answer.unlisted_accounts() else "",
    )
    return answer


async def fetch_positions_zero_line_async(
    settings: Settings,
    client_id: int,
    *,
    conids: Iterable[int] | None = None,
    timeout_s: float = 15.0,
) -> ZeroLineFetch:
    """Rows (source="batch") for the held, non-zero positions, optionally only `conids`, and IB's list.

    Market value and unrealized P&L come from reqPnLSingle, requested in paced chunks (see
    `subscribe_pnl_paced`); a position whose P&L did not arrive within `timeout_s` of its chunk still gets a
    row with position and average cost (values None), never invented numbers. Raises AccountNotManaged
    (naming V6_IB_ACCOUNT) before any request when the login does not manage the configured account.
    """
    session = await _helper_session(settings, client_id)
    ib = session.ib
    try:
        answer = _position_list(ib, settings)
        wanted = set(conids) if conids is not None else None
        positions = [p for p in answer.held.values() if wanted is None or p.contract.conId in wanted]
        pnls = await subscribe_pnl_paced(ib, [(p.account, p.contract.conId) for p in positions], timeout_s)
        now = datetime.now(UTC)
        rows = [_row(p, pnls[(p.account, p.contract.conId)], now) for p in positions]
        missing = sum(1 for row in rows if row.market_value is None)
        if missing:
            log.warning("zero-line fetch: P&L missing for %d of %d positions", missing, len(rows))
        log.info("zero-line fetch: %d positions on clientId %s", len(rows), session.client_id)
        return ZeroLineFetch(rows, answer)
    finally:
        # Closing the connection ends every subscription of this client, so no cancelPnLSingle is spent
        # from the pacing budget (2,000 cancels would double the fetch time for nothing).
        await session.close()


async def subscribe_pnl_paced(
    ib: IB, keys: Sequence[tuple[str, int]], timeout_s: float, chunk: int = PACED_CHUNK
) -> dict[tuple[str, int], PnLSingle]:
    """reqPnLSingle for every (account, conid), at most `chunk` requests at a time.

    IB allows 50 messages per second and answers error 100 past it. ib_async throttles at 45/s by the
    time it sends, but the gateway counts by the time it reads, so a burst can arrive bunched. Here the
    next chunk leaves only after the previous chunk was answered (so the gateway has read it) and a full
    second has passed since: no one-second window on the gateway's side ever holds more than one chunk.
    """
    loop = asyncio.get_running_loop()
    pnls: dict[tuple[str, int], PnLSingle] = {}
    answered: set[tuple[str, int]] = set()
    wake = asyncio.Event()

    def on_pnl(pnl: PnLSingle) -> None:
        answered.add((pnl.account, pnl.conId))
        wake.set()

    def on_error(req_id: int, code: int, message: str, contract: object = None) -> None:
        pnl = ib.wrapper.reqId2PnlSingle.get(req_id)  # an error naming our request answers it: no P&L comes
        if pnl is not None:
            log.warning("zero-line fetch: no P&L for conid=%s: %s %s", pnl.conId, code, message)
            on_pnl(pnl)

    ib.pnlSingleEvent += on_pnl
    ib.errorEvent += on_error
    try:
        quiet_until = 0.0
        for start in range(0, len(keys), chunk):
            await asyncio.sleep(max(0.0, quiet_until - loop.time()))
            batch = keys[start:start + chunk]
            for account, conid in batch:
                pnls[(account, conid)] = ib.reqPnLSingle(account, "", conid)
            deadline = loop.time() + timeout_s
            while not answered.issuperset(batch) and loop.time() < deadline:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), deadline - loop.time())
            if not answered.issuperset(batch):
                unanswered = len(set(batch) - answered)
                log.warning("zero-line fetch: %d P&L requests unanswered after %.0fs", unanswered, timeout_s)
            quiet_until = loop.time() + 1.0
    finally:
        ib.pnlSingleEvent -= on_pnl
        ib.errorEvent -= on_error
    return pnls


def _row(position: Position, pnl: PnLSingle, now: datetime) -> PositionRow:
    """A fetched position valued by its P&L answer; no usable value leaves the values None."""
    holding = holding_from_position(position)
    apply_pnl(holding, pnl.value, pnl.unrealizedPnL, pnl.realizedPnL, now, pnl.dailyPnL)
    return row_from_holding(holding, now, source="batch")
