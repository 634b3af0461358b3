"""The simulated account book: accounts, underlyings, contracts, positions and per-contract quirks.

Books come from `demo_books` (the built-in demo and generated books) or `book_file` (a JSON file, validated
row by row); `load_book(spec)` in `book_file` picks one from a spec string.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from v6_positions.contracts import is_option

DEFAULT_VOLATILITY = 0.25

GREEK_FIELDS = ("implied_vol", "delta", "opt_price", "pv_dividend", "gamma", "vega", "theta", "und_price")
DATA_WARNINGS = frozenset({10090, 10091})


class BookError(ValueError):
    """A book specification or file is invalid; the message names the row and field."""


@dataclass(slots=True)
class BookContract:
    conid: int
    symbol: str
    sec_type: str = "OPT"
    expiry: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: int = 100
    primary_exchange: str = ""
    currency: str = "USD"

    @property
    def local_symbol(self) -> str:
        if self.sec_type != "OPT":
            return self.symbol
        # OCC option symbol: root padded to 6, YYMMDD, right, strike * 1000 in 8 digits
        return f"{self.symbol:<6}{self.expiry[2:]}{self.right}{round(self.strike * 1000):08d}"

    @property
    def trading_class(self) -> str:
        return self.symbol if is_option(self.sec_type) else "NMS"

    @property
    def exchange(self) -> str:
        return "SMART"


@dataclass(slots=True)
class BookPosition:
    account: str
    contract: BookContract
    position: float
    avg_cost: float
    strategy_id: int | None = None


@dataclass(slots=True)
class Underlying:
    symbol: str
    price: float
    volatility: float = DEFAULT_VOLATILITY
    conid: int = 0
    exchange: str = "NASDAQ"

    def stock_contract(self) -> BookContract:
        return BookContract(self.conid, self.symbol, "STK", multiplier=1, primary_exchange=self.exchange)


@dataclass(slots=True)
class Quirks:
    """How IB's data for one contract departs from a clean two-sided quote (see the module docstring)."""

    one_sided: bool = False  # no bid (-1, size 0), a stale last, IB's model price in tick 13
    stale_last: float | None = None  # the frozen last of a one-sided contract (None: 3 x close, >= 0.05)
    data_warning: int | None = None  # 10090 / 10091 sent on reqMktData; the data still streams
    missing_greeks: frozenset[str] = frozenset()  # names from GREEK_FIELDS sent as IB's sentinels


def make_quirks(fields: dict[str, Any], where: str) -> Quirks:
    """Quirks from the optional book / control-API fields; BookError names the field when one is bad."""
    one_sided = fields.get("one_sided", False)
    if not isinstance(one_sided, bool):
        raise BookError(f"{where}.one_sided: expected true or false, got {one_sided!r}")
    stale_last = fields.get("stale_last")
    if stale_last is not None:
        if isinstance(stale_last, bool) or not isinstance(stale_last, (int, float)):
            raise BookError(f"{where}.stale_last: expected a number, got {stale_last!r}")
        if not math.isfinite(stale_last) or stale_last <= 0:
            raise BookError(f"{where}.stale_last: must be a finite number > 0, got {stale_last!r}")
        stale_last = float(stale_last)
    warning = fields.get("data_warning")
    if warning is not None and (isinstance(warning, bool) or warning not in DATA_WARNINGS):
        raise BookError(f"{where}.data_warning: must be 10090, 10091 or null, got {warning!r}")
    missing = fields.get("missing_greeks", [])
    if not isinstance(missing, list) or not all(isinstance(m, str) for m in missing):
        raise BookError(f"{where}.missing_greeks: expected a list of names, got {missing!r}")
    unknown = sorted(set(missing) - set(GREEK_FIELDS))
    if unknown:
        raise BookError(
            f"{where}.missing_greeks: unknown name {unknown[0]!r}; known: {', '.join(GREEK_FIELDS)}"
        )
    return Quirks(one_sided, stale_last, warning, frozenset(missing))


QUIRK_FIELDS = frozenset({"one_sided", "stale_last", "data_warning", "missing_greeks"})


@dataclass(slots=True)
class Book:
    accounts: list[str]
    underlyings: dict[str, Underlying]
    positions: dict[tuple[str, int], BookPosition] = field(default_factory=dict)
    contracts: dict[int, BookContract] = field(default_factory=dict)
    quirks: dict[int, Quirks] = field(default_factory=dict)  # conid -> how IB's data for it is odd

    def __post_init__(self) -> None:
        for und in self.underlyings.values():
            self.contracts.setdefault(und.conid, und.stock_contract())
        for pos in self.positions.values():
            self.contracts.setdefault(pos.contract.conid, pos.contract)

    def account_positions(self, account: str) -> list[BookPosition]:
        return [p for p in self.positions.values() if p.account == account]


class StrategyLeg(NamedTuple):
    """One strategy leg. Field order matches `StrategyRegistry.add_active(conid, symbol, right, strike,
    expiry, strategy_id)` so `registry.add_active(*leg)` works."""

    conid: int
    symbol: str
    right: str
    strike: float
    expiry: str
    strategy_id: int


def demo_strategy_legs(book: Book) -> list[StrategyLeg]:
    """Every position that carries a strategy id (the demo book's 12 iron-condor legs), ordered by conid."""
    legs = [
        StrategyLeg(
            p.contract.conid,
            p.contract.symbol,
            p.contract.right,
            p.contract.strike,
            p.contract.expiry,
            p.strategy_id,
        )
        for p in book.positions.values()
        if p.strategy_id is not None
    ]
    return sorted(legs, key=lambda leg: leg.conid)
