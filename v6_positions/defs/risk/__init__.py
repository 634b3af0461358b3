"""Risk per strategy and per underlying, from `positions`.

assets.py             strategy_risk / underlying_risk (every minute) and book_eod (the day's close)
checks.py             legs held and fresh, coverage, limits
schedules.py          the refresh every minute, the close at 16:20 New York
underlying_closes.py  underlyings' latest prices for model greeks
"""
