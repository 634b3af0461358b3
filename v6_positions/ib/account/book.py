"""What the account holds, as the stream last heard it from IB: the holdings by (account, conid) with their
latest valuations, which managed (FA) accounts are followed, and which holdings a streamed conid's ticks
fan out to.

Fed by positions (reqPositions: multi-client safe) only; valuations are applied by the caller from the
zero-line reqPnLSingle sweep. Never by account updates: IB serves those to one client per gateway.

The book is synced from the rebuild after a (re)connect until the connection drops: live position updates,
routing and the stream's requests wait for it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from ib_async import Position

from v6_positions.ib.account.holdings import Holding, HoldingKey, holding_from_position
from v6_positions.ib.routing.plan import Held
from v6_positions.ib.routing.ranking import RankedLeg

log = logging.getLogger(__name__)

Change = Literal["opened", "changed", "closed"]


@dataclass(slots=True)
class AccountStats:
    """The book as the stream's status shows it."""

    synced: bool  # rebuilt from IB's positions since the last (re)connect
    accounts: list[str]  # accounts with a holding, sorted


@dataclass(slots=True)
class PositionChange:
    kind: Change
    holding: Holding


def account_error(account: str, managed: list[str]) -> str | None:
    """None when V6_IB_ACCOUNT (`account`) is one this login manages, or empty (all are followed)."""
    if account and account not in managed:
        return (
            f"V6_IB_ACCOUNT={account!r} is not managed by this login (managed accounts: "
            f"{', '.join(managed) or 'none'}); set it to one of them, or empty to follow all"
        )
    return None


class AccountBook:
    def __init__(self, account: str, stream_sec_types: Collection[str]) -> None:
        self.account = account  # V6_IB_ACCOUNT: the one account followed; empty follows every managed one
        self.stream_sec_types = tuple(stream_sec_types)
        self.holdings: dict[HoldingKey, Holding] = {}
        self.synced = False  # rebuilt from IB's positions since the last (re)connect
        self._stream_keys: dict[int, list[HoldingKey]] = {}  # streamed conid -> holdings (ticks fan out)

    # -- accounts --------------------------------------------------------------------------------------------
    def wants(self, account: str) -> bool:
        return not self.account or account == self.account

    def check_accounts(self, managed: list[str]) -> str | None:
        """None when V6_IB_ACCOUNT is one this login manages (or empty: all are followed); else the error."""
        error = account_error(self.account, managed)
        if error is not None:
            return error
        if not self.account and len(managed) > 1:
            log.info("no V6_IB_ACCOUNT set: following all %d managed accounts %s", len(managed), managed)
        return None

    def accounts(self) -> list[str]:
        return sorted({key[0] for key in self.holdings})

    def stats(self) -> AccountStats:
        return AccountStats(self.synced, self.accounts())

    # -- positions -------------------------------------------------------------------------------------------
    def absorb(self, position: Position, *, startup: bool = False) -> Holding | None:
        """Take in a non-zero position of a followed account (new or changed); None when it is not one."""
        if not self.wants(position.account):
            return None
        contract = position.contract
        if not contract.conId:
            log.warning("position without conId ignored: %s", contract)
            return None
        key = (position.account, int(contract.conId))
        if position.position == 0:
            if startup:
                log.debug("conid=%s closed (position 0): nothing to stream or queue", key[1])
            return None
        holding = self.holdings.get(key)
        if holding is None:
            holding = holding_from_position(position)
            self.holdings[key] = holding
            if contract.secType not in self.stream_sec_types:
                log.debug("conid=%s sec type %s is never streamed: queued", key[1], contract.secType)
        else:
            fresh = holding_from_position(position)
            if fresh.position != holding.position:
                # IB's last valuation priced the old size: it says nothing about this one. The queue gets
                # the new size unvalued (the batch fetches it), never the new size at the old value's time.
                holding.clear_valuation()
            holding.position, holding.average_cost = fresh.position, fresh.average_cost
        return holding

    def rebuild(self, positions: Iterable[Position]) -> list[Holding]:
        """Start over from IB's full positions list (after a (re)connect): synced from now on. Returns the
        holdings that closed while we were away; the others keep their last valuation until the next sweep
        replaces it."""
        previous = self.holdings
        self.holdings = {}
        for position in positions:
            self.absorb(position, startup=True)
        for key, holding in previous.items():
            fresh = self.holdings.get(key)
            if fresh is not None and holding.payload_time is not None and fresh.position == holding.position:
                fresh.take_valuation(holding)  # only a valuation of the size held now
        self.synced = True
        return [previous[key] for key in previous.keys() - self.holdings.keys()]

    def connection_lost(self) -> None:
        """Positions may change unheard until the next rebuild: not synced (the holdings stay, their
        valuations carry over to the rebuild)."""
        self.synced = False

    def on_position(self, position: Position) -> PositionChange | None:
        """A live position update: what it changed, None when nothing we follow changed."""
        if not self.wants(position.account):
            return None
        key = (position.account, int(position.contract.conId or 0))
        if position.position == 0:
            closed = self.holdings.pop(key, None)
            return None if closed is None else PositionChange("closed", closed)
        is_new = key not in self.holdings
        holding = self.absorb(position)
        if holding is None:
            return None
        return PositionChange("opened" if is_new else "changed", holding)

    def retain(self, positions: Iterable[Position]) -> list[Holding]:
        """Keep only what IB's fresh positions list still holds (after a 1101); returns the closed ones."""
        present = {
            (p.account, int(p.contract.conId)) for p in positions if p.position != 0 and self.wants(p.account)
        }
        return [self.holdings.pop(key) for key in [key for key in self.holdings if key not in present]]

    # -- views -----------------------------------------------------------------------------------------------
    def held(self) -> list[Held]:
        """The routing view of every holding."""
        return [Held(h.account, h.conid, h.sec_type, h.position) for h in self.holdings.values()]

    def ranked_legs(self, active: Collection[int]) -> dict[int, RankedLeg]:
        """Every held, streamable, active leg with its positions across accounts (what the ranking scores)."""
        legs: dict[int, RankedLeg] = {}
        for holding in self.holdings.values():
            conid = holding.conid
            if conid in active and holding.sec_type in self.stream_sec_types and holding.position:
                leg = legs.setdefault(conid, RankedLeg(holding.contract, []))
                leg.positions.append(holding.position)
        return legs

    def set_streamed(self, conids: Collection[int]) -> None:
        """The conids streamed now: their ticks fan out to these holdings without a scan per tick."""
        self._stream_keys = {}
        for key in self.holdings:
            if key[1] in conids:
                self._stream_keys.setdefault(key[1], []).append(key)

    def add_streamed(self, conid: int) -> None:
        self._stream_keys[conid] = [key for key in self.holdings if key[1] == conid]

    def holdings_for(self, conid: int) -> list[Holding]:
        keys = self._stream_keys.get(conid)
        if keys is None:
            return [h for key, h in self.holdings.items() if key[1] == conid]
        return [self.holdings[key] for key in keys if key in self.holdings]

    def holding_for(self, conid: int) -> Holding | None:
        found = self.holdings_for(conid)
        return found[0] if found else None


def mark_closed(holding: Holding, now: datetime | None = None) -> None:
    """A closed position's last row: position 0 and no value, so the current book drops it.

    A close is an event of now: its time is when IB told us, never the time of the last valuation (a row
    of any later observation would otherwise win over the close in the book, and it would stay open)."""
    holding.clear_valuation()
    holding.position = 0.0
    holding.market_value = 0.0
    holding.payload_time = now or datetime.now(UTC)
