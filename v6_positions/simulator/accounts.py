"""Account subscriptions: reqPositions (every client may hold one) and reqAccountUpdates (one holder per
gateway, as at IB: a new subscriber unsubscribes the old one with 2100), and their pushes."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from v6_positions.simulator import protocol
from v6_positions.simulator.book import Book, BookPosition
from v6_positions.simulator.clients import ClientRegistry
from v6_positions.simulator.protocol import In
from v6_positions.simulator.requests import FieldReader
from v6_positions.simulator.session import ClientSession
from v6_positions.simulator.stats import SimStats
from v6_positions.simulator.valuation import Valuation

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class AccountUpdates:
    """Owns the one account-updates holder (and its account); reqPositions flags live on each session."""

    book: Book
    clients: ClientRegistry
    valuation: Valuation
    counters: SimStats
    holder: ClientSession | None = None
    account: str = ""  # the account the holder subscribed to

    def handlers(self) -> dict[int, Any]:
        return {
            In.REQ_ACCT_DATA: self.req_account_updates,
            In.REQ_POSITIONS: self.req_positions,
            In.CANCEL_POSITIONS: self.cancel_positions,
        }

    # ---- requests -----------------------------------------------------------------------------------------
    def req_positions(self, session: ClientSession, fields: list[str]) -> None:
        session.positions_active = True
        messages = [self.valuation.position_message(p) for p in self.book.positions.values()]
        session.send_many([*messages, protocol.position_end()])

    def cancel_positions(self, session: ClientSession, fields: list[str]) -> None:
        session.positions_active = False

    def req_account_updates(self, session: ClientSession, fields: list[str]) -> None:
        r = FieldReader(fields, 2)
        subscribe = r.flag()
        account = r.text() or self.book.accounts[0]
        if subscribe:
            if session.client_id is not None:
                self.counters.account_updates_requests_by_client[session.client_id] += 1
            if account not in self.book.accounts:
                session.send_error(-1, 321, f"{protocol.ERROR_TEXTS[321]} unknown account {account!r}")
                return
            self.take(session, account)
        elif self.holder is session:
            self.release()

    # ---- the one holder -----------------------------------------------------------------------------------
    def take(self, session: ClientSession, account: str) -> None:
        previous = self.holder
        if previous is not None and previous is not session:
            previous.send_error(-1, 2100)
            log.info(
                "account updates move from client %s to client %s", previous.client_id, session.client_id
            )
        self.holder = session
        self.account = account
        self.push(session, account, download_end=True)

    def release(self) -> None:
        self.holder = None
        self.account = ""

    def session_gone(self, session: ClientSession) -> None:
        if self.holder is session:
            self.release()

    def push(
        self,
        session: ClientSession,
        account: str,
        download_end: bool = False,
        positions: list[BookPosition] | None = None,
    ) -> None:
        if positions is None:
            positions = self.book.account_positions(account)
        values = self.valuation.account_values(account)
        messages = [protocol.account_value(k, v, c, account) for k, v, c in values]
        messages += [self.valuation.portfolio_message(p) for p in positions]
        messages.append(protocol.account_time(time.strftime("%H:%M")))
        if download_end:
            messages.append(protocol.account_download_end(account))
        session.send_many(messages)

    def push_portfolio(self) -> None:
        """IB's periodic (every few minutes) portfolio refresh to the holder."""
        if self.holder is not None:
            self.push(self.holder, self.account)

    def position_changed(self, pos: BookPosition) -> None:
        """Tell reqPositions subscribers and the account's updates holder, as IB does."""
        for session in list(self.clients.sessions):
            if session.positions_active:
                session.send(self.valuation.position_message(pos))
        if self.holder is not None and self.account == pos.account:
            self.push(self.holder, pos.account, positions=[pos])

    def stats(self) -> dict[str, Any]:
        return {
            "account_updates_holder": self.holder.client_id if self.holder else None,
            "account_updates_account": self.account or None,
        }
