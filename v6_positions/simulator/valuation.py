"""What the book is worth at the current quotes, by IB's conventions: position and portfolio messages,
account values, P&L (reqPnL / reqPnLSingle) and the account summary requests that read them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from v6_positions.contracts import is_option
from v6_positions.simulator import protocol
from v6_positions.simulator.book import Book, BookContract, BookPosition
from v6_positions.simulator.market import Market
from v6_positions.simulator.protocol import In
from v6_positions.simulator.requests import FieldReader
from v6_positions.simulator.session import ClientSession
from v6_positions.simulator.stats import SimStats

STARTING_CASH = 1_000_000.0


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
        c.multiplier if is_option(c.sec_type) else "",
        exchange,
        c.currency,
        c.local_symbol,
        c.trading_class,
    ]


@dataclass(slots=True, eq=False)
class Valuation:
    """Stateless over the book and the market: prices positions, answers P&L and account requests."""

    book: Book
    market: Market
    counters: SimStats

    def handlers(self) -> dict[int, Any]:
        return {
            In.REQ_PNL: self.req_pnl,
            In.CANCEL_PNL: self.cancel_pnl,
            In.REQ_PNL_SINGLE: self.req_pnl_single,
            In.CANCEL_PNL_SINGLE: self.cancel_pnl_single,
            In.REQ_ACCOUNT_UPDATES_MULTI: self.req_account_updates_multi,
            In.REQ_ACCOUNT_SUMMARY: self.req_account_summary,
        }

    # ---- values -------------------------------------------------------------------------------------------
    def value(self, pos: BookPosition) -> tuple[float, float, float]:
        """(marketPrice, marketValue, unrealizedPNL) by IB's conventions."""
        price = self.market.quote(pos.contract).mark
        value = round(price * pos.position * pos.contract.multiplier, 2)
        return price, value, round(value - pos.avg_cost * pos.position, 2)

    def position_message(self, pos: BookPosition) -> list[object]:
        c = pos.contract
        exchange = c.primary_exchange if c.sec_type == "STK" else ""  # IB leaves it empty for options
        return protocol.position(pos.account, contract_fields(c, exchange), pos.position, pos.avg_cost)

    def portfolio_message(self, pos: BookPosition) -> list[object]:
        price, value, unrealized = self.value(pos)
        return protocol.portfolio_value(
            contract_fields(pos.contract, pos.contract.primary_exchange),
            pos.position,
            price,
            value,
            pos.avg_cost,
            unrealized,
            0.0,
            pos.account,
        )

    def account_values(self, account: str) -> list[tuple[str, str, str]]:
        gross = unrealized = 0.0
        for pos in self.book.account_positions(account):
            _, value, pnl = self.value(pos)
            gross += abs(value)
            unrealized += pnl
        net = STARTING_CASH + unrealized
        return [
            ("AccountCode", account, ""),
            ("AccountType", "INDIVIDUAL", ""),
            ("NetLiquidation", f"{net:.2f}", "USD"),
            ("TotalCashValue", f"{STARTING_CASH:.2f}", "USD"),
            ("SettledCash", f"{STARTING_CASH:.2f}", "USD"),
            ("BuyingPower", f"{net * 4:.2f}", "USD"),
            ("EquityWithLoanValue", f"{net:.2f}", "USD"),
            ("GrossPositionValue", f"{gross:.2f}", "USD"),
            ("AvailableFunds", f"{net * 0.8:.2f}", "USD"),
            ("ExcessLiquidity", f"{net * 0.85:.2f}", "USD"),
            ("UnrealizedPnL", f"{unrealized:.2f}", "USD"),
            ("RealizedPnL", "0.00", "USD"),
        ]

    def pnl_single_message(self, req_id: int, account: str, conid: int) -> list[object]:
        pos = self.book.positions.get((account, conid))
        if pos is None:
            return protocol.pnl_single(req_id, 0, 0.0, 0.0, 0.0, 0.0)
        quote = self.market.quote(pos.contract)
        _, value, unrealized = self.value(pos)
        daily = round((quote.mark - quote.close) * pos.position * pos.contract.multiplier, 2)
        return protocol.pnl_single(req_id, pos.position, daily, unrealized, 0.0, value)

    def pnl_message(self, req_id: int, account: str) -> list[object]:
        unrealized = sum(self.value(p)[2] for p in self.book.account_positions(account))
        return protocol.pnl(req_id, 0.0, round(unrealized, 2), 0.0)

    def push_pnl(self, session: ClientSession) -> None:
        """The periodic P&L update of every reqPnL / reqPnLSingle the session holds."""
        messages = [self.pnl_single_message(r, a, c) for r, (a, c) in session.pnl_single.items()]
        messages += [self.pnl_message(r, a) for r, a in session.pnl.items()]
        session.send_many(messages)

    # ---- requests -----------------------------------------------------------------------------------------
    def req_pnl(self, session: ClientSession, fields: list[str]) -> None:
        r = FieldReader(fields, 1)
        req_id, account = r.integer(), r.text()
        session.pnl[req_id] = account
        session.send(self.pnl_message(req_id, account))

    def cancel_pnl(self, session: ClientSession, fields: list[str]) -> None:
        session.pnl.pop(FieldReader(fields, 1).integer(), None)

    def req_pnl_single(self, session: ClientSession, fields: list[str]) -> None:
        r = FieldReader(fields, 1)
        req_id, account, _model, conid = r.integer(), r.text(), r.text(), r.integer()
        if session.client_id is not None:
            self.counters.pnl_single_requests_by_client[session.client_id] += 1
        session.pnl_single[req_id] = (account, conid)
        session.send(self.pnl_single_message(req_id, account, conid))

    def cancel_pnl_single(self, session: ClientSession, fields: list[str]) -> None:
        session.pnl_single.pop(FieldReader(fields, 1).integer(), None)

    def req_account_updates_multi(self, session: ClientSession, fields: list[str]) -> None:
        r = FieldReader(fields, 2)
        req_id, account, model = r.integer(), r.text(), r.text()
        accounts = self.book.accounts if account in ("", "All") else [account]
        messages = [
            protocol.account_update_multi(req_id, acct, model, key, value, currency)
            for acct in accounts
            if acct in self.book.accounts
            for key, value, currency in self.account_values(acct)
        ]
        session.send_many([*messages, protocol.account_update_multi_end(req_id)])

    def req_account_summary(self, session: ClientSession, fields: list[str]) -> None:
        r = FieldReader(fields, 2)
        req_id, _group, tags = r.integer(), r.text(), r.text()
        wanted = {t for t in tags.split(",") if t}
        messages = [
            protocol.account_summary(req_id, acct, key, value, currency)
            for acct in self.book.accounts
            for key, value, currency in self.account_values(acct)
            if key in wanted
        ]
        session.send_many([*messages, protocol.account_summary_end(req_id)])
