"""Market state: a seeded random walk per underlying and model quotes for every contract of the book."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from v6_positions.contracts import is_option
from v6_positions.simulator.book import Book, BookContract, Underlying
from v6_positions.simulator.pricing import OptionQuote, black_scholes, years_to_expiry

# By default one walk step is one minute of a 390-minute trading day: visible moves, no blow-ups.
_MINUTE_YEARS = 1.0 / (252 * 390)
NO_BID = -1.0  # IB's "no price" on the bid side


@dataclass(slots=True)
class Quote:
    bid: float
    ask: float
    last: float
    mark: float  # what the portfolio reports as marketPrice (per share)
    bid_size: float
    ask_size: float
    last_size: float
    volume: float
    close: float
    und_price: float
    greeks: OptionQuote | None = None


def _round_tick(price: float) -> float:
    return round(max(price, 0.0), 2)


class Market:
    """Deterministic for a given (book, seed): the n-th step always yields the same prices."""

    def __init__(self, book: Book, seed: int = 0, step_minutes: float = 1.0) -> None:
        if not step_minutes > 0:
            raise ValueError(f"step_minutes={step_minutes!r}: the market minutes of a step must be > 0")
        self._book = book
        self._seed = seed
        self._step_years = step_minutes * _MINUTE_YEARS
        self._rngs: dict[str, random.Random] = {}
        self._prices: dict[str, float] = {}
        self._opening: dict[str, float] = {}
        self._range: dict[str, tuple[float, float]] = {}  # the day's (low, high) of each underlying
        self._volume: dict[int, float] = {}
        self._cache: dict[int, Quote] = {}
        self._years: dict[str, float] = {}
        self.steps = 0
        for und in book.underlyings.values():
            self._add_underlying(und)

    def _add_underlying(self, und: Underlying) -> None:
        self._rngs[und.symbol] = random.Random(f"{self._seed}:{und.symbol}")
        self._prices[und.symbol] = und.price
        self._opening[und.symbol] = und.price
        self._range[und.symbol] = (und.price, und.price)

    def price(self, symbol: str) -> float:
        if symbol not in self._prices:
            self._add_underlying(self._book.underlyings[symbol])
        return self._prices[symbol]

    def day_bar(self, symbol: str) -> tuple[float, float, float, float]:
        """(open, high, low, close) of the underlying since the market started: its only day of history."""
        close = self.price(symbol)
        low, high = self._range[symbol]
        return self._opening[symbol], high, low, close

    def step(self) -> None:
        """Advance every underlying by one geometric Brownian step."""
        for symbol, rng in self._rngs.items():
            vol = self._book.underlyings[symbol].volatility
            step = self._step_years
            shock = rng.gauss(0.0, 1.0) * vol * math.sqrt(step) - 0.5 * vol * vol * step
            price = self._prices[symbol] = self._prices[symbol] * math.exp(shock)
            low, high = self._range[symbol]
            self._range[symbol] = (min(low, price), max(high, price))
        self.steps += 1
        self._cache.clear()

    def forget(self, conid: int) -> None:
        """Drop a cached quote (its contract's quirks changed)."""
        self._cache.pop(conid, None)

    def _years_to(self, expiry: str) -> float:
        years = self._years.get(expiry)
        if years is None:
            years = self._years[expiry] = years_to_expiry(expiry)
        return years

    def _model(self, contract: BookContract, spot: float) -> OptionQuote:
        und = self._book.underlyings[contract.symbol]
        return black_scholes(
            spot, contract.strike, self._years_to(contract.expiry), und.volatility, contract.right
        )

    def quote(self, contract: BookContract) -> Quote:
        cached = self._cache.get(contract.conid)
        if cached is not None:
            return cached
        spot = self.price(contract.symbol)
        # sizes and volume follow from the step count, so they are as deterministic as prices
        size_seed = (contract.conid * 7919 + self.steps * 104729) % 1000
        volume = self._volume.get(contract.conid, 1000.0 + contract.conid % 500) + size_seed % 7
        self._volume[contract.conid] = volume
        if is_option(contract.sec_type):
            greeks = self._model(contract, spot)
            mid = max(greeks.price, 0.01)
            close = max(self._model(contract, self._opening[contract.symbol]).price, 0.01)
            half_spread = max(0.01, round(mid * 0.01, 2))
        else:
            greeks = None
            mid = spot
            close = self._opening[contract.symbol]
            half_spread = 0.01
        bid = _round_tick(mid - half_spread)
        bid = bid if bid > 0 else 0.01
        bid_size = float(10 + size_seed % 40)
        last = _round_tick(mid)
        quirks = self._book.quirks.get(contract.conid)
        if quirks is not None and quirks.one_sided:
            # A far-OTM wing: nobody bids (IB sends -1 with size 0) and the last trade is days old.
            bid, bid_size = NO_BID, 0.0
            last = quirks.stale_last if quirks.stale_last is not None else max(_round_tick(3 * close), 0.05)
        quote = Quote(
            bid=bid,
            ask=_round_tick(mid + half_spread),
            last=last,
            mark=round(mid, 4),
            bid_size=bid_size,
            ask_size=float(10 + (size_seed // 40) % 40),
            last_size=float(1 + size_seed % 9),
            volume=volume,
            close=_round_tick(close),
            und_price=spot,
            greeks=greeks,
        )
        self._cache[contract.conid] = quote
        return quote
