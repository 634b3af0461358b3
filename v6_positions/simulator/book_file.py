"""Books from a spec: "demo", "demo-fa", "generated:N" (see `demo_books`) or a JSON file, checked row by row.

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
import zlib
from pathlib import Path
from typing import Any

from v6_positions.simulator.book import (
    DEFAULT_VOLATILITY,
    QUIRK_FIELDS,
    Book,
    BookContract,
    BookError,
    BookPosition,
    Underlying,
    make_quirks,
)
from v6_positions.simulator.demo_books import demo_book, demo_fa_book, generated_book


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
