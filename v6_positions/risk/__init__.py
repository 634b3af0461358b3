"""Risk from the book: pure polars over the lake's position rows (no IB, no Dagster).

position_risk.py       each position's risk by IB's conventions
model_greeks.py        model greeks (Black-Scholes / Black-76, implied vol) where IB sent none
underlying_prices.py   each option's underlying price at zero lines, from the sources at hand
aggregates.py          position risk summed per strategy and per underlying
refresh.py             one risk refresh: book and registry read once, every measure computed
store.py               the risk snapshot, its history and the days' closes
eod.py                 the book and its risk at a day's close, from history alone
"""
