"""Request table: client message id -> handler, like ib_async's Decoder in reverse.

Each handler gets the session and the message fields and answers the way IB Gateway would. A request with
missing or unparsable fields gets error 320 on that connection only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from v6_positions.simulator import protocol
from v6_positions.simulator.book import BookContract
from v6_positions.simulator.protocol import In
from v6_positions.simulator.session import ClientSession

if TYPE_CHECKING:
    from v6_positions.simulator.server import GatewaySimulator

log = logging.getLogger(__name__)

Handler = Callable[[ClientSession, list[str]], None]


class RequestError(ValueError):
    """A request's fields are missing or malformed (IB answers 320)."""


class FieldReader:
    """Sequential typed access to a message's fields, starting after the message id."""

    __slots__ = ("_fields", "_pos")

    def __init__(self, fields: list[str], start: int = 1) -> None:
        self._fields = fields
        self._pos = start

    def text(self) -> str:
        if self._pos >= len(self._fields):
            raise RequestError(f"message {self._fields[0]} has only {len(self._fields)} fields")
        value = self._fields[self._pos]
        self._pos += 1
        return value

    def integer(self, default: int = 0) -> int:
        raw = self.text()
        try:
            return int(raw) if raw else default
        except ValueError:
            raise RequestError(
                f"field {self._pos - 1} of message {self._fields[0]}: {raw!r} is not an integer"
            ) from None

    def number(self, default: float = 0.0) -> float:
        raw = self.text()
        try:
            return float(raw) if raw else default
        except ValueError:
            raise RequestError(
                f"field {self._pos - 1} of message {self._fields[0]}: {raw!r} is not a number"
            ) from None

    def flag(self) -> bool:
        return self.integer() != 0


class ContractQuery:
    """The 12 contract fields every contract-carrying request starts with."""

    __slots__ = (
        "conid",
        "symbol",
        "sec_type",
        "expiry",
        "strike",
        "right",
        "multiplier",
        "exchange",
        "primary_exchange",
        "currency",
        "local_symbol",
        "trading_class",
    )

    def __init__(self, r: FieldReader) -> None:
        self.conid = r.integer()
        self.symbol = r.text()
        self.sec_type = r.text()
        self.expiry = r.text()
        self.strike = r.number()
        raw_right = r.text().upper()
        self.right = {"CALL": "C", "PUT": "P"}.get(raw_right, raw_right)
        self.multiplier = r.text()
        self.exchange = r.text()
        self.primary_exchange = r.text()
        self.currency = r.text()
        self.local_symbol = r.text()
        self.trading_class = r.text()

    def matches(self, c: BookContract) -> bool:
        if self.conid:
            return c.conid == self.conid
        return (
            (not self.symbol or self.symbol.upper() == c.symbol)
            and (bool(self.symbol) or bool(self.local_symbol))
            and (not self.sec_type or self.sec_type.upper() == c.sec_type)
            and (not self.expiry or c.expiry.startswith(self.expiry))
            and (not self.strike or abs(self.strike - c.strike) < 1e-6)
            and (not self.right or self.right == c.right)
            and (not self.currency or self.currency.upper() == c.currency)
            and (not self.local_symbol or self.local_symbol == c.local_symbol)
            and (not self.trading_class or self.trading_class == c.trading_class)
        )

    def describe(self) -> str:
        if self.conid:
            return f"conId={self.conid}"
        return f"{self.symbol} {self.sec_type} {self.expiry} {self.strike or ''} {self.right}".strip()


def contract_fields(c: BookContract, exchange: str) -> list[object]:
    """conId, symbol, secType, expiry, strike, right, multiplier, <exchange>, currency, localSymbol,
    tradingClass — the layout position (61) and portfolio (7) messages share."""
    return [
        c.conid,
        c.symbol,
        c.sec_type,
        c.expiry,
        c.strike,
        c.right,
        c.multiplier if c.sec_type == "OPT" else "",
        exchange,
        c.currency,
        c.local_symbol,
        c.trading_class,
    ]


class RequestDispatcher:
    def __init__(self, sim: GatewaySimulator) -> None:
        self.sim = sim
        self.handlers: dict[int, Handler] = {
            In.REQ_MKT_DATA: self.req_mkt_data,
            In.CANCEL_MKT_DATA: self.cancel_mkt_data,
            In.REQ_OPEN_ORDERS: self.req_open_orders,
            In.REQ_ALL_OPEN_ORDERS: self.req_open_orders,
            In.REQ_AUTO_OPEN_ORDERS: self.ignore,
            In.REQ_ACCT_DATA: self.req_account_updates,
            In.REQ_EXECUTIONS: self.req_executions,
            In.REQ_IDS: self.req_ids,
            In.REQ_CONTRACT_DATA: self.req_contract_details,
            In.REQ_MANAGED_ACCTS: self.req_managed_accounts,
            In.REQ_CURRENT_TIME: self.req_current_time,
            In.REQ_MARKET_DATA_TYPE: self.ignore,
            In.REQ_POSITIONS: self.req_positions,
            In.CANCEL_POSITIONS: self.cancel_positions,
            In.REQ_ACCOUNT_SUMMARY: self.req_account_summary,
            In.CANCEL_ACCOUNT_SUMMARY: self.ignore,
            In.REQ_ACCOUNT_UPDATES_MULTI: self.req_account_updates_multi,
            In.CANCEL_ACCOUNT_UPDATES_MULTI: self.ignore,
            In.REQ_PNL: self.req_pnl,
            In.CANCEL_PNL: self.cancel_pnl,
            In.REQ_PNL_SINGLE: self.req_pnl_single,
            In.CANCEL_PNL_SINGLE: self.cancel_pnl_single,
            In.REQ_COMPLETED_ORDERS: self.req_completed_orders,
        }
        for msg_id in protocol.ORDER_REQUESTS:
            self.handlers[msg_id] = self.refuse_order

    def dispatch(self, session: ClientSession, fields: list[str]) -> None:
        try:
            msg_id = int(fields[0])
        except ValueError:
            self._bad_input(session, 505, f"message id {fields[0]!r} is not a number")
            return
        handler = self.handlers.get(msg_id)
        if handler is None:
            self._bad_input(session, 505, f"unknown message id {msg_id}")
            return
        try:
            handler(session, fields)
        except RequestError as exc:
            self._bad_input(session, 320, str(exc))

    def _bad_input(self, session: ClientSession, code: int, detail: str) -> None:
        self.sim.counters.bad_input += 1
        log.warning("client %s: %s", session.client_id, detail)
        session.send_error(-1, code, f"{protocol.ERROR_TEXTS[code]} {detail}")

    # ---- trivial answers ----------------------------------------------------------------------------------
    def ignore(self, session: ClientSession, fields: list[str]) -> None:
        pass

    def refuse_order(self, session: ClientSession, fields: list[str]) -> None:
        self.sim.counters.orders_received += 1
        order_id = FieldReader(fields, 2).integer(-1) if len(fields) > 2 else -1
        log.warning("client %s sent order message %s; refused (read-only)", session.client_id, fields[0])
        session.send_error(order_id, 321, protocol.READ_ONLY_TEXT)

    def req_open_orders(self, session: ClientSession, fields: list[str]) -> None:
        session.send(protocol.open_order_end())

    def req_completed_orders(self, session: ClientSession, fields: list[str]) -> None:
        session.send(protocol.completed_orders_end())

    def req_executions(self, session: ClientSession, fields: list[str]) -> None:
        req_id = FieldReader(fields, 2).integer()
        session.send(protocol.execution_data_end(req_id))

    def req_ids(self, session: ClientSession, fields: list[str]) -> None:
        session.send(protocol.next_valid_id(self.sim.next_order_id))

    def req_managed_accounts(self, session: ClientSession, fields: list[str]) -> None:
        session.send(protocol.managed_accounts(self.sim.book.accounts))

    def req_current_time(self, session: ClientSession, fields: list[str]) -> None:
        session.send(protocol.current_time(int(time.time())))

    # ---- positions and account ----------------------------------------------------------------------------
    def req_positions(self, session: ClientSession, fields: list[str]) -> None:
        session.positions_active = True
        messages = [self.sim.position_message(p) for p in self.sim.book.positions.values()]
        session.send_many([*messages, protocol.position_end()])

    def cancel_positions(self, session: ClientSession, fields: list[str]) -> None:
        session.positions_active = False

    def req_account_updates(self, session: ClientSession, fields: list[str]) -> None:
        r = FieldReader(fields, 2)
        subscribe = r.flag()
        account = r.text() or self.sim.book.accounts[0]
        if subscribe:
            if session.client_id is not None:
                self.sim.counters.account_updates_requests_by_client[session.client_id] += 1
            if account not in self.sim.book.accounts:
                session.send_error(-1, 321, f"{protocol.ERROR_TEXTS[321]} unknown account {account!r}")
                return
            self.sim.take_account_updates(session, account)
        elif self.sim.account_updates_holder is session:
            self.sim.release_account_updates()

    def req_account_updates_multi(self, session: ClientSession, fields: list[str]) -> None:
        r = FieldReader(fields, 2)
        req_id, account, model = r.integer(), r.text(), r.text()
        accounts = self.sim.book.accounts if account in ("", "All") else [account]
        messages = [
            protocol.account_update_multi(req_id, acct, model, key, value, currency)
            for acct in accounts
            if acct in self.sim.book.accounts
            for key, value, currency in self.sim.account_values(acct)
        ]
        session.send_many([*messages, protocol.account_update_multi_end(req_id)])

    def req_account_summary(self, session: ClientSession, fields: list[str]) -> None:
        r = FieldReader(fields, 2)
        req_id, _group, tags = r.integer(), r.text(), r.text()
        wanted = {t for t in tags.split(",") if t}
        messages = [
            protocol.account_summary(req_id, acct, key, value, currency)
            for acct in self.sim.book.accounts
            for key, value, currency in self.sim.account_values(acct)
            if key in wanted
        ]
        session.send_many([*messages, protocol.account_summary_end(req_id)])

    def req_pnl(self, session: ClientSession, fields: list[str]) -> None:
        r = FieldReader(fields, 1)
        req_id, account = r.integer(), r.text()
        session.pnl[req_id] = account
        session.send(self.sim.pnl_message(req_id, account))

    def cancel_pnl(self, session: ClientSession, fields: list[str]) -> None:
        session.pnl.pop(FieldReader(fields, 1).integer(), None)

    def req_pnl_single(self, session: ClientSession, fields: list[str]) -> None:
        r = FieldReader(fields, 1)
        req_id, account, _model, conid = r.integer(), r.text(), r.text(), r.integer()
        if session.client_id is not None:
            self.sim.counters.pnl_single_requests_by_client[session.client_id] += 1
        session.pnl_single[req_id] = (account, conid)
        session.send(self.sim.pnl_single_message(req_id, account, conid))

    def cancel_pnl_single(self, session: ClientSession, fields: list[str]) -> None:
        session.pnl_single.pop(FieldReader(fields, 1).integer(), None)

    # ---- contracts ----------------------------------------------------------------------------------------
    def req_contract_details(self, session: ClientSession, fields: list[str]) -> None:
        r = FieldReader(fields, 2)
        req_id = r.integer()
        query = ContractQuery(r)
        found = [c for c in self.sim.book.contracts.values() if query.matches(c)]
        if not found:
            session.send_error(req_id, 200, f"{protocol.ERROR_TEXTS[200]} ({query.describe()})")
            return
        messages = [self.contract_details_message(req_id, c) for c in found[:1000]]
        session.send_many([*messages, protocol.contract_data_end(req_id)])

    def contract_details_message(self, req_id: int, c: BookContract) -> list[object]:
        und = self.sim.book.underlyings.get(c.symbol)
        is_opt = c.sec_type == "OPT"
        long_name = c.symbol if not is_opt else f"{c.symbol} {c.expiry} {c.strike:g} {c.right}"
        return [
            protocol.Out.CONTRACT_DATA,
            req_id,
            c.symbol,
            c.sec_type,
            c.expiry,
            c.strike,
            c.right,
            c.exchange,
            c.currency,
            c.local_symbol,
            c.trading_class,
            c.trading_class,
            c.conid,
            0.01,
            c.multiplier if is_opt else "",
            "LMT,MKT,STP",
            "SMART,CBOE,AMEX,ISE,PHLX" if is_opt else "SMART",
            1,
            und.conid if (und and is_opt) else 0,
            long_name,
            c.primary_exchange,
            c.expiry[:6] if is_opt else "",
            "",
            "",
            "",
            "US/Eastern",
            "",
            "",
            "",
            "",
            0,  # numSecIds
            1,
            c.symbol if is_opt else "",
            "STK" if is_opt else "",
            "26" if is_opt else "26",
            c.expiry,
            "COMMON" if not is_opt else "",
            1,
            1,
            1,
        ]

    # ---- market data --------------------------------------------------------------------------------------
    def req_mkt_data(self, session: ClientSession, fields: list[str]) -> None:
        r = FieldReader(fields, 2)
        req_id = r.integer()
        query = ContractQuery(r)
        if query.sec_type.upper() == "BAG":
            for _ in range(r.integer()):
                r.integer(), r.integer(), r.text(), r.text()
        if r.flag():  # delta-neutral contract
            r.integer(), r.number(), r.number()
        _generic_ticks, snapshot, regulatory = r.text(), r.flag(), r.flag()
        self.sim.subscribe_market_data(session, req_id, query, snapshot or regulatory)

    def cancel_mkt_data(self, session: ClientSession, fields: list[str]) -> None:
        req_id = FieldReader(fields, 2).integer()
        self.sim.cancel_market_data(session, req_id)


def resolve_contract(contracts: dict[int, BookContract], query: ContractQuery) -> BookContract | None:
    """The one contract a market-data request names, or None when unknown or ambiguous."""
    if query.conid:
        return contracts.get(query.conid)
    found = [c for c in contracts.values() if query.matches(c)]
    return found[0] if len(found) == 1 else None


__all__ = ["ContractQuery", "RequestDispatcher", "contract_fields", "resolve_contract"]
