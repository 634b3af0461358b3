"""The simulated account book: accounts, underlyings, contracts and positions, and where books come from.

`load_book(spec)` accepts:
- ``"demo"`` — one account ``DU1000001``: three iron condors (SPY, QQQ, IWM; 12 legs with fixed conids
  900000001..900000012 and strategy ids 1, 2, 3), 200 other option positions on eight underlyings and
  four stock positions;
- ``"demo-fa"`` — the demo book plus a second account ``DU1000002`` (a login with several managed accounts):
  it holds two of the SPY condor legs too, 20 options of its own (conids 930000001..930000020) and AAPL stock;
- ``"generated:N"`` — N synthetic option positions across eight underlyings and four expiries (deterministic);
- a path to a JSON file in the format below.

Expiries are the third Fridays of the coming months, computed from today's date, so every contract is live.

JSON book format::

    {
      "accounts": ["DU1000001", "DU1000002"],          # required, non-empty, unique strings
      "underlyings": [                                 # required for every symbol a position uses
        {"symbol": "SPY", "price": 580.0,              # price > 0 (start of the random walk)
         "volatility": 0.18,                           # optional, default 0.25 (annual, > 0)
         "conid": 756733,                              # optional stock conid, default derived from the symbol
         "exchange": "ARCA"}                           # optional primary exchange, default "NASDAQ"
      ],
      "positions": [
        {"account": "DU1000001",                       # must be one of "accounts"
         "conid": 900000001,                           # positive int, unique
         "symbol": "SPY",                              # must be an underlying
         "sec_type": "OPT",                            # "OPT" or "STK" (default "OPT")
         "expiry": "20261218",                         # OPT only: YYYYMMDD
         "strike": 600.0,                              # OPT only: > 0
         "right": "C",                                 # OPT only: "C" or "P"
         "multiplier": 100,                            # default 100 for OPT, 1 for STK
         "position": -1,                               # non-zero number
         "avg_cost": 250.0,                            # optional; per contract incl. multiplier (IB)
         "strategy_id": 1,                             # optional; marks a strategy leg
         "one_sided": true,                            # optional quirk: no bid (-1), stale last, model price
         "stale_last": 0.40,                           # optional: the stale last of a one-sided contract
         "data_warning": 10090,                        # optional quirk: 10090/10091 warning on reqMktData
         "missing_greeks": ["vega", "theta"]}          # optional quirk: sent as IB's sentinels (-2 / -1)
      ]
    }

A bad row is refused with `BookError` naming the row and field, e.g. ``positions[3].strike: must be > 0``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

DEMO_ACCOUNT = "DU1000001"
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
        return self.symbol if self.sec_type == "OPT" else "NMS"

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

    @property
    def plain(self) -> bool:
        return not (self.one_sided or self.data_warning or self.missing_greeks)


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


def third_fridays(count: int, today: dt.date | None = None) -> list[str]:
    """The next `count` monthly expiries (third Fridays) strictly after today, as YYYYMMDD."""
    today = today or dt.date.today()
    out: list[str] = []
    year, month = today.year, today.month
    while len(out) < count:
        first = dt.date(year, month, 1)
        friday = first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)
        if friday > today:
            out.append(friday.strftime("%Y%m%d"))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


# Real stock conids where known so the demo looks familiar; prices are only the start of the walk.
_DEMO_UNDERLYINGS = [
    Underlying("SPY", 580.0, 0.16, 756733, "ARCA"),
    Underlying("QQQ", 500.0, 0.20, 320227571, "NASDAQ"),
    Underlying("IWM", 220.0, 0.22, 9579970, "ARCA"),
    Underlying("AAPL", 230.0, 0.26, 265598, "NASDAQ"),
    Underlying("MSFT", 420.0, 0.24, 272093, "NASDAQ"),
    Underlying("NVDA", 135.0, 0.45, 4815747, "NASDAQ"),
    Underlying("TSLA", 250.0, 0.55, 76792991, "NASDAQ"),
    Underlying("AMZN", 200.0, 0.30, 3691937, "NASDAQ"),
]


def _underlyings() -> dict[str, Underlying]:
    return {
        u.symbol: Underlying(u.symbol, u.price, u.volatility, u.conid, u.exchange) for u in _DEMO_UNDERLYINGS
    }


def _strike_step(price: float) -> float:
    return 1.0 if price < 300 else 5.0


def _round_strike(value: float, step: float) -> float:
    return round(round(value / step) * step, 2)


def _option_avg_cost(und: Underlying, strike: float, right: str, expiry: str, rng: random.Random) -> float:
    """A plausible entry price per contract (multiplier included): today's model price +/- 20 %."""
    from v6_positions.simulator.pricing import black_scholes, years_to_expiry

    quote = black_scholes(und.price, strike, years_to_expiry(expiry), und.volatility, right)
    return round(max(quote.price, 0.01) * 100 * rng.uniform(0.8, 1.2), 2)


def _add_random_options(
    book: Book, count: int, rng: random.Random, next_conid: int, expiries: list[str]
) -> None:
    symbols = list(book.underlyings)
    taken = {(c.symbol, c.expiry, c.strike, c.right) for c in book.contracts.values()}
    account = book.accounts[0]
    added = 0
    while added < count:
        und = book.underlyings[symbols[rng.randrange(len(symbols))]]
        expiry = expiries[rng.randrange(len(expiries))]
        right = rng.choice("CP")
        step = _strike_step(und.price)
        strike = _round_strike(und.price * rng.uniform(0.8, 1.2), step)
        key = (und.symbol, expiry, strike, right)
        if key in taken:
            continue
        taken.add(key)
        contract = BookContract(next_conid, und.symbol, "OPT", expiry, strike, right, 100)
        qty = rng.choice([-10, -5, -3, -2, -1, 1, 2, 3, 5, 10])
        pos = BookPosition(account, contract, float(qty), _option_avg_cost(und, strike, right, expiry, rng))
        book.positions[(account, next_conid)] = pos
        book.contracts[next_conid] = contract
        next_conid += 1
        added += 1


def demo_book(today: dt.date | None = None) -> Book:
    """The built-in demo book (deterministic for a given date)."""
    rng = random.Random(20240601)
    expiries = third_fridays(4, today)
    book = Book([DEMO_ACCOUNT], _underlyings())
    conid = 900000001
    condor_expiry = expiries[1]
    for strategy_id, symbol in enumerate(("SPY", "QQQ", "IWM"), start=1):
        und = book.underlyings[symbol]
        step = _strike_step(und.price)
        legs = [  # (moneyness, right, qty): long put wing, short put, short call, long call wing
            (0.93, "P", 1),
            (0.95, "P", -1),
            (1.05, "C", -1),
            (1.07, "C", 1),
        ]
        for moneyness, right, qty in legs:
            strike = _round_strike(und.price * moneyness, step)
            contract = BookContract(conid, symbol, "OPT", condor_expiry, strike, right, 100)
            avg = _option_avg_cost(und, strike, right, condor_expiry, rng)
            book.positions[(DEMO_ACCOUNT, conid)] = BookPosition(
                DEMO_ACCOUNT, contract, float(qty), avg, strategy_id
            )
            book.contracts[conid] = contract
            conid += 1
    _add_random_options(book, 200, rng, 910000001, expiries)
    for symbol, qty in (("AAPL", 100), ("MSFT", 50), ("NVDA", 200), ("SPY", 10)):
        und = book.underlyings[symbol]
        contract = und.stock_contract()
        avg = round(und.price * rng.uniform(0.85, 1.1), 4)
        book.positions[(DEMO_ACCOUNT, contract.conid)] = BookPosition(DEMO_ACCOUNT, contract, float(qty), avg)
    return book


FA_ACCOUNT = "DU1000002"


def demo_fa_book(today: dt.date | None = None) -> Book:
    """The demo book plus a second managed account holding two SPY condor legs, 20 options and AAPL."""
    book = demo_book(today)
    book.accounts.append(FA_ACCOUNT)
    for conid, qty in ((900000001, 2.0), (900000002, -2.0)):
        first = book.positions[(DEMO_ACCOUNT, conid)]
        book.positions[(FA_ACCOUNT, conid)] = BookPosition(
            FA_ACCOUNT, first.contract, qty, first.avg_cost, first.strategy_id
        )
    rng = random.Random(20240602)
    other = Book([FA_ACCOUNT], book.underlyings, contracts=dict(book.contracts))
    _add_random_options(other, 20, rng, 930000001, third_fridays(4, today))
    book.positions.update(other.positions)
    book.contracts.update(other.contracts)
    aapl = book.underlyings["AAPL"].stock_contract()
    book.positions[(FA_ACCOUNT, aapl.conid)] = BookPosition(FA_ACCOUNT, aapl, 50.0, 221.5)
    return book


def generated_book(count: int, today: dt.date | None = None) -> Book:
    """`count` synthetic option positions (one account) across eight underlyings and four expiries."""
    if count < 0:
        raise BookError(f"generated:N needs N >= 0, got {count}")
    book = Book([DEMO_ACCOUNT], _underlyings())
    _add_random_options(book, count, random.Random(count), 920000001, _expiries_for(book, count, today))
    return book


def _expiries_for(book: Book, count: int, today: dt.date | None) -> list[str]:
    """Enough monthly expiries that `count` distinct random contracts stay cheap to draw.

    Each expiry offers a fixed number of (symbol, strike, right) slots; keeping the book at most half full
    bounds the rejection sampling in `_add_random_options` (a fixed four expiries looped forever past ~5,000).
    """
    slots_per_expiry = sum(
        2 * (int(0.4 * und.price / _strike_step(und.price)) + 1) for und in book.underlyings.values()
    )
    months = max(4, -(-2 * count // slots_per_expiry))
    return third_fridays(months, today)


def _symbol_conid(symbol: str) -> int:
    return 100_000 + zlib.crc32(symbol.encode()) % 800_000_000


def _require(row: dict[str, Any], where: str, name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in row:
        raise BookError(f"{where}.{name}: missing")
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise BookError(f"{where}.{name}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _number(row: dict[str, Any], where: str, name: str, default: float | None = None) -> float:
    """A finite JSON number (NaN and Infinity, which Python's json accepts, are refused)."""
    if name not in row and default is not None:
        return default
    value = float(_require(row, where, name, (int, float)))
    if not math.isfinite(value):
        raise BookError(f"{where}.{name}: must be a finite number, got {value!r}")
    return value


def _refuse_unknown_fields(row: dict[str, Any], where: str, known: frozenset[str]) -> None:
    """A misspelt optional field (e.g. "avg_cst") would otherwise be ignored without a word."""
    unknown = sorted(set(row) - known)
    if unknown:
        raise BookError(f"{where}.{unknown[0]}: unknown field; known: {', '.join(sorted(known))}")


_BOOK_FIELDS = frozenset({"accounts", "underlyings", "positions"})
_UNDERLYING_FIELDS = frozenset({"symbol", "price", "volatility", "conid", "exchange"})
_POSITION_FIELDS = frozenset(
    {
        "account",
        "conid",
        "symbol",
        "sec_type",
        "expiry",
        "strike",
        "right",
        "multiplier",
        "position",
        "avg_cost",
        "strategy_id",
        *QUIRK_FIELDS,
    }
)


def book_from_dict(data: Any) -> Book:
    """Build and validate a book from the JSON structure documented in this module."""
    if not isinstance(data, dict):
        raise BookError("book: expected a JSON object")
    _refuse_unknown_fields(data, "book", _BOOK_FIELDS)
    accounts = _require(data, "book", "accounts", list)
    if (
        not accounts
        or not all(isinstance(a, str) and a for a in accounts)
        or len(set(accounts)) != len(accounts)
    ):
        raise BookError("book.accounts: must be a non-empty list of unique non-empty strings")
    underlyings: dict[str, Underlying] = {}
    for i, row in enumerate(_require(data, "book", "underlyings", list)):
        where = f"underlyings[{i}]"
        if not isinstance(row, dict):
            raise BookError(f"{where}: expected an object")
        _refuse_unknown_fields(row, where, _UNDERLYING_FIELDS)
        symbol = _require(row, where, "symbol", str)
        if not symbol.strip():
            raise BookError(f"{where}.symbol: must be a non-empty string")
        if symbol in underlyings:
            raise BookError(f"{where}.symbol: {symbol!r} is listed twice")
        price = _number(row, where, "price")
        if price <= 0:
            raise BookError(f"{where}.price: must be > 0, got {price}")
        vol = _number(row, where, "volatility", DEFAULT_VOLATILITY)
        if vol <= 0:
            raise BookError(f"{where}.volatility: must be > 0, got {vol}")
        conid = row.get("conid", _symbol_conid(symbol))
        if isinstance(conid, bool) or not isinstance(conid, int) or conid <= 0:
            raise BookError(f"{where}.conid: must be a positive integer, got {conid!r}")
        exchange = _require(row, where, "exchange", str) if "exchange" in row else "NASDAQ"
        underlyings[symbol] = Underlying(symbol, price, vol, conid, exchange)
    book = Book(list(accounts), underlyings)
    for i, row in enumerate(_require(data, "book", "positions", list)):
        pos = _position_from_row(row, f"positions[{i}]", book)
        key = (pos.account, pos.contract.conid)
        if key in book.positions:
            raise BookError(f"positions[{i}].conid: duplicate position {key}")
        known = book.contracts.get(pos.contract.conid)
        if known is not None and known != pos.contract:
            raise BookError(f"positions[{i}].conid: {pos.contract.conid} already names a different contract")
        book.positions[key] = pos
        book.contracts[pos.contract.conid] = pos.contract
        if QUIRK_FIELDS & set(row):
            quirks = make_quirks(row, f"positions[{i}]")
            if pos.contract.conid in book.quirks and book.quirks[pos.contract.conid] != quirks:
                raise BookError(f"positions[{i}].conid: {pos.contract.conid} has different quirks elsewhere")
            book.quirks[pos.contract.conid] = quirks
    return book


def _position_from_row(row: Any, where: str, book: Book) -> BookPosition:
    if not isinstance(row, dict):
        raise BookError(f"{where}: expected an object")
    _refuse_unknown_fields(row, where, _POSITION_FIELDS)
    account = _require(row, where, "account", str)
    if account not in book.accounts:
        raise BookError(f"{where}.account: {account!r} is not in accounts")
    conid = _require(row, where, "conid", int)
    if conid <= 0:
        raise BookError(f"{where}.conid: must be > 0, got {conid}")
    symbol = _require(row, where, "symbol", str)
    und = book.underlyings.get(symbol)
    if und is None:
        raise BookError(f"{where}.symbol: {symbol!r} has no entry in underlyings")
    sec_type = row.get("sec_type", "OPT")
    if sec_type not in ("OPT", "STK"):
        raise BookError(f"{where}.sec_type: must be 'OPT' or 'STK', got {sec_type!r}")
    position = _number(row, where, "position")
    if position == 0:
        raise BookError(f"{where}.position: must be non-zero")
    strategy_id = row.get("strategy_id")
    if strategy_id is not None and (isinstance(strategy_id, bool) or not isinstance(strategy_id, int)):
        raise BookError(f"{where}.strategy_id: expected int, got {strategy_id!r}")
    if sec_type == "STK":
        if conid != und.conid:
            raise BookError(f"{where}.conid: a stock position must use its underlying's conid {und.conid}")
        contract = und.stock_contract()
    else:
        expiry = _require(row, where, "expiry", str)
        try:
            dt.datetime.strptime(expiry, "%Y%m%d")
        except ValueError:
            raise BookError(f"{where}.expiry: expected YYYYMMDD, got {expiry!r}") from None
        strike = _number(row, where, "strike")
        if strike <= 0:
            raise BookError(f"{where}.strike: must be > 0, got {strike}")
        right = _require(row, where, "right", str)
        if right not in ("C", "P"):
            raise BookError(f"{where}.right: must be 'C' or 'P', got {right!r}")
        multiplier = row.get("multiplier", 100)
        if isinstance(multiplier, bool) or not isinstance(multiplier, int) or multiplier <= 0:
            raise BookError(f"{where}.multiplier: must be a positive integer, got {multiplier!r}")
        contract = BookContract(conid, symbol, "OPT", expiry, strike, right, multiplier)
    if row.get("avg_cost") is None:
        avg_cost = und.price if sec_type == "STK" else 0.0
    else:
        avg_cost = _number(row, where, "avg_cost")
    return BookPosition(account, contract, position, avg_cost, strategy_id)


def load_book(spec: str) -> Book:
    """A book from "demo", "generated:N" or a JSON file path; raises BookError when it is invalid."""
    if spec == "demo":
        return demo_book()
    if spec == "demo-fa":
        return demo_fa_book()
    if spec.startswith("generated:"):
        try:
            count = int(spec.split(":", 1)[1])
        except ValueError:
            raise BookError(f"book spec {spec!r}: N in generated:N must be an integer") from None
        return generated_book(count)
    path = Path(spec)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise BookError(f"book file {spec}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise BookError(f"book file {spec}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    try:
        return book_from_dict(data)
    except BookError as exc:
        raise BookError(f"book file {spec}: {exc}") from None
