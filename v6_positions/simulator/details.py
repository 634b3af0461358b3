"""reqContractDetails: the contracts of the book a query matches, in IB's contract-data layout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from v6_positions.contracts import is_option
from v6_positions.simulator import protocol
from v6_positions.simulator.book import Book, BookContract
from v6_positions.simulator.protocol import In
from v6_positions.simulator.requests import ContractQuery, FieldReader
from v6_positions.simulator.session import ClientSession

MAX_MATCHES = 1000


@dataclass(slots=True, eq=False)
class ContractDetails:
    """Answers reqContractDetails from the book's contracts."""

    book: Book

    def handlers(self) -> dict[int, Any]:
        return {In.REQ_CONTRACT_DATA: self.req_contract_details}

    def req_contract_details(self, session: ClientSession, fields: list[str]) -> None:
        r = FieldReader(fields, 2)
        req_id = r.integer()
        query = ContractQuery.read(r)
        found = [c for c in self.book.contracts.values() if query.matches(c)]
        if not found:
            session.send_error(req_id, 200, f"{protocol.ERROR_TEXTS[200]} ({query.describe()})")
            return
        messages = [self.message(req_id, c) for c in found[:MAX_MATCHES]]
        session.send_many([*messages, protocol.contract_data_end(req_id)])

    def message(self, req_id: int, c: BookContract) -> list[object]:
        und = self.book.underlyings.get(c.symbol)
        is_opt = is_option(c.sec_type)
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
            "26",  # aggGroup
            c.expiry,
            "COMMON" if not is_opt else "",
            1,
            1,
            1,
        ]
