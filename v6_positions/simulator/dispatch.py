"""Request table: client message id -> handler, like ib_async's Decoder in reverse.

Each state owner (market-data feed, account updates, valuation, contract details) brings the handlers for
its requests: a handler gets the session and the message fields, reads them and does the work itself. The
few requests with a fixed answer are handled here. A request with missing or unparsable fields gets error
320 on that connection only; an unknown message id 505.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from v6_positions.simulator import protocol
from v6_positions.simulator.clients import NEXT_ORDER_ID
from v6_positions.simulator.protocol import In
from v6_positions.simulator.requests import FieldReader, RequestError
from v6_positions.simulator.session import ClientSession
from v6_positions.simulator.stats import SimStats

log = logging.getLogger(__name__)

Handler = Callable[[ClientSession, list[str]], None]


class RequestDispatcher:
    def __init__(self, counters: SimStats, accounts: list[str], *tables: Mapping[int, Handler]) -> None:
        self.counters = counters
        self.accounts = accounts
        self.handlers: dict[int, Handler] = {
            In.REQ_OPEN_ORDERS: self.req_open_orders,
            In.REQ_ALL_OPEN_ORDERS: self.req_open_orders,
            In.REQ_AUTO_OPEN_ORDERS: self.ignore,
            In.REQ_EXECUTIONS: self.req_executions,
            In.REQ_IDS: self.req_ids,
            In.REQ_MANAGED_ACCTS: self.req_managed_accounts,
            In.REQ_CURRENT_TIME: self.req_current_time,
            In.REQ_MARKET_DATA_TYPE: self.ignore,
            In.CANCEL_ACCOUNT_SUMMARY: self.ignore,
            In.CANCEL_ACCOUNT_UPDATES_MULTI: self.ignore,
            In.REQ_COMPLETED_ORDERS: self.req_completed_orders,
        }
        for table in tables:
            self.handlers.update(table)
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
        self.counters.bad_input += 1
        log.warning("client %s: %s", session.client_id, detail)
        session.send_error(-1, code, f"{protocol.ERROR_TEXTS[code]} {detail}")

    # ---- fixed answers ------------------------------------------------------------------------------------
    def ignore(self, session: ClientSession, fields: list[str]) -> None:
        pass

    def refuse_order(self, session: ClientSession, fields: list[str]) -> None:
        self.counters.orders_received += 1
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
        session.send(protocol.next_valid_id(NEXT_ORDER_ID))

    def req_managed_accounts(self, session: ClientSession, fields: list[str]) -> None:
        session.send(protocol.managed_accounts(self.accounts))

    def req_current_time(self, session: ClientSession, fields: list[str]) -> None:
        session.send(protocol.current_time(int(time.time())))
