"""Changing the book while clients watch: positions opened, changed or closed, and a contract's quirks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from v6_positions.contracts import normalize_right
from v6_positions.simulator.accounts import AccountUpdates
from v6_positions.simulator.book import (
    QUIRK_FIELDS,
    Book,
    BookContract,
    BookError,
    BookPosition,
    Quirks,
    Underlying,
    make_quirks,
)
from v6_positions.simulator.market import Market

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class BookChanges:
    """Edits the book at runtime (control API, tests) and has the subscribers told."""

    book: Book
    market: Market
    accounts: AccountUpdates

    def set_position(
        self, account: str, conid: int, position: float, avg_cost: float | None = None, **contract: Any
    ) -> None:
        """Open, change or close (position 0) a position; clients with reqPositions get a position message
        and the account-updates holder a portfolio update, as at IB.

        A contract the book does not know needs `symbol`, and for options `expiry`, `strike`, `right`
        (`sec_type` default "OPT", `multiplier` default 100)."""
        if account not in self.book.accounts:
            raise ValueError(f"unknown account {account!r}")
        known = self.book.contracts.get(conid)
        if known is None:
            known = self._new_contract(conid, contract)
        key = (account, conid)
        existing = self.book.positions.get(key)
        if avg_cost is None:
            avg_cost = existing.avg_cost if existing else self.market.quote(known).mark * known.multiplier
        pos = BookPosition(
            account, known, float(position), float(avg_cost), existing.strategy_id if existing else None
        )
        if position == 0:
            self.book.positions.pop(key, None)
        else:
            self.book.positions[key] = pos
        self.accounts.position_changed(pos)
        log.info("position %s %d -> %g", account, conid, position)

    def _new_contract(self, conid: int, fields: dict[str, Any]) -> BookContract:
        symbol = fields.get("symbol")
        if not symbol:
            raise ValueError(
                f"conid {conid} is unknown: give symbol (and expiry, strike, right for an option)"
            )
        sec_type = str(fields.get("sec_type", "OPT"))
        if symbol not in self.book.underlyings:
            price = float(fields.get("underlying_price", 100.0))
            self.book.underlyings[symbol] = Underlying(symbol, price, conid=conid if sec_type == "STK" else 0)
        if sec_type == "STK":
            contract = self.book.underlyings[symbol].stock_contract()
            contract.conid = conid
        else:
            try:
                contract = BookContract(
                    conid,
                    symbol,
                    "OPT",
                    str(fields["expiry"]),
                    float(fields["strike"]),
                    _right(fields["right"]),
                    int(fields.get("multiplier", 100)),
                )
            except KeyError as exc:
                raise ValueError(f"new option conid {conid} needs {exc.args[0]}") from None
        self.book.contracts[conid] = contract
        return contract

    def set_quirks(self, conid: int, **fields: Any) -> Quirks:
        """Change how IB's data for a known contract looks (fields as in a book file's position row)."""
        if conid not in self.book.contracts:
            raise ValueError(f"conid {conid} is not in the book")
        unknown = sorted(set(fields) - QUIRK_FIELDS)
        if unknown:
            raise ValueError(f"unknown quirk field {unknown[0]!r}")
        current = self.book.quirks.get(conid, Quirks())
        merged: dict[str, Any] = {
            "one_sided": current.one_sided,
            "stale_last": current.stale_last,
            "data_warning": current.data_warning,
            "missing_greeks": sorted(current.missing_greeks),
            **fields,
        }
        try:
            quirks = make_quirks(merged, "quirks")
        except BookError as exc:
            raise ValueError(str(exc)) from None
        self.book.quirks[conid] = quirks
        self.market.forget(conid)
        log.info("quirks of %d: %s", conid, quirks)
        return quirks


def _right(raw: object) -> str:
    right = normalize_right(str(raw))
    if right is None:
        raise ValueError(f"right: expected C, P, CALL or PUT, got {raw!r}")
    return right
