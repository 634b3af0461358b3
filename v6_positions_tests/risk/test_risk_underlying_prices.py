"""The underlying's price at zero lines: a streamed leg's, else a held stock's, else a historical bar's."""

from __future__ import annotations

import datetime as dt

import polars as pl

from v6_positions.risk.underlying_prices import (
    symbols_without_price,
    underlying_prices,
    with_underlying_prices,
)

T0 = dt.datetime(2026, 12, 3, 14, 0, tzinfo=dt.UTC)


def _book() -> pl.DataFrame:
    rows = [  # symbol, sec_type, market_price, underlying_price, minutes after T0
        ("SPY", "OPT", 2.0, 581.0, 1),  # streamed leg: IB's underlying price
        ("SPY", "OPT", 3.0, 582.5, 2),  # a newer streamed leg of SPY wins
        ("SPY", "OPT", 4.0, None, 3),  # queued SPY option
        ("AAPL", "STK", 231.0, None, 4),  # held stock
        ("AAPL", "OPT", 5.0, None, 5),
        ("IWM", "OPT", 6.0, None, 6),  # nothing prices IWM but a historical bar
        ("MSFT", "OPT", 7.0, -1.0, 7),  # IB's -1: no price; and no bar either
        ("QQQ", "STK", None, None, 8),  # a stock without a price is no source
        ("QQQ", "OPT", 8.0, None, 9),
        ("DIA", "OPT", 1.0, 400.0, 0),  # a streamed leg early on
        ("DIA", "OPT", 2.0, None, 1),  # valued a minute after it: the streamed price is the nearer
        ("DIA", "OPT", 3.0, None, 9),  # valued with the stock below (same sweep): the stock's is the nearer
        ("DIA", "STK", 401.0, None, 10),
    ]
    return pl.DataFrame(
        [
            {
                "symbol": s,
                "sec_type": t,
                "market_price": p,
                "underlying_price": u,
                "event_time": T0 + dt.timedelta(minutes=m),
            }
            for s, t, p, u, m in rows
        ]
    )


def test_best_source_per_symbol_and_only_the_rest_asked_from_history() -> None:
    book = _book()
    assert symbols_without_price(book) == ["IWM", "MSFT", "QQQ"]
    prices = underlying_prices(book, {"IWM": 221.0, "SPY": 1.0, "MSFT": float("nan")})
    assert sorted(prices.rows()) == [
        ("AAPL", 231.0, "stock"),
        ("DIA", 400.0, "stream"),
        ("IWM", 221.0, "historical"),
        ("SPY", 582.5, "stream"),  # the bar's 1.0 loses to IB's streamed price
    ]


def test_option_rows_take_the_price_nearest_their_own_time_and_say_where_it_came_from() -> None:
    filled = with_underlying_prices(_book(), {"IWM": 221.0})
    assert filled.select("symbol", "sec_type", "underlying_price", "underlying_price_source").rows() == [
        ("SPY", "OPT", 581.0, "stream"),  # a row's own price is kept
        ("SPY", "OPT", 582.5, "stream"),
        ("SPY", "OPT", 582.5, "stream"),
        ("AAPL", "STK", None, None),  # stock rows are not touched
        ("AAPL", "OPT", 231.0, "stock"),
        ("IWM", "OPT", 221.0, "historical"),
        ("MSFT", "OPT", None, None),  # nothing known: null, never IB's -1
        ("QQQ", "STK", None, None),
        ("QQQ", "OPT", None, None),
        ("DIA", "OPT", 400.0, "stream"),
        ("DIA", "OPT", 400.0, "stream"),
        ("DIA", "OPT", 401.0, "stock"),
        ("DIA", "STK", None, None),
    ]
