"""Reading a client request's fields: typed sequential access, and the contract fields requests carry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from v6_positions.contracts import normalize_right
from v6_positions.simulator.book import BookContract

T = TypeVar("T")


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

    def _parsed(self, parse: Callable[[str], T], default: T, what: str) -> T:
        raw = self.text()
        try:
            return parse(raw) if raw else default
        except ValueError:
            raise RequestError(
                f"field {self._pos - 1} of message {self._fields[0]}: {raw!r} is not {what}"
            ) from None

    def integer(self, default: int = 0) -> int:
        return self._parsed(int, default, "an integer")

    def number(self, default: float = 0.0) -> float:
        return self._parsed(float, default, "a number")

    def flag(self) -> bool:
        return self.integer() != 0


@dataclass(slots=True)
class ContractQuery:
    """The 12 contract fields every contract-carrying request starts with."""

    conid: int
    symbol: str
    sec_type: str
    expiry: str
    strike: float
    right: str  # "C" / "P" for any spelling of call / put; other text as sent (it then matches nothing)
    multiplier: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str

    @classmethod
    def read(cls, r: FieldReader) -> ContractQuery:
        conid, symbol, sec_type, expiry, strike = r.integer(), r.text(), r.text(), r.text(), r.number()
        raw_right = r.text().upper()
        right = normalize_right(raw_right) or raw_right
        return cls(conid, symbol, sec_type, expiry, strike, right, *(r.text() for _ in range(6)))

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


def resolve_contract(contracts: dict[int, BookContract], query: ContractQuery) -> BookContract | None:
    """The one contract a market-data request names, or None when unknown or ambiguous."""
    if query.conid:
        return contracts.get(query.conid)
    found = [c for c in contracts.values() if query.matches(c)]
    return found[0] if len(found) == 1 else None
