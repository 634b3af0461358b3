"""The built-in books, deterministic for a given date (expiries are the third Fridays of the coming months,
computed from today, so every contract is live):

- ``"demo"`` — one account ``DU1000001``: three iron condors (SPY, QQQ, IWM; 12 legs with fixed conids
  900000001..900000012 and strategy ids 1, 2, 3), 200 other option positions on eight underlyings and
  four stock positions;
- ``"demo-fa"`` — the demo book plus a second account ``DU1000002`` (a login with several managed accounts):
  it holds two of the SPY condor legs too, 20 options of its own (conids 930000001..930000020) and AAPL stock;
- ``"generated:N"`` — N synthetic option positions across eight underlyings and four expiries (deterministic).
"""

from __future__ import annotations

import datetime as dt
import random

from v6_positions.simulator.book import Book, BookContract, BookError, BookPosition, Underlying
from v6_positions.simulator.pricing import black_scholes, years_to_expiry

DEMO_ACCOUNT = "DU1000001"
FA_ACCOUNT = "DU1000002"


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
