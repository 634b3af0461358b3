"""What IB answers without a streaming line.

valuation_sweep.py  ValuationSweep: paced reqPnLSingle valuations of queued holdings (the stream's)
position_fetch.py   the batch path's zero-line fetch when the stream is down (positions + valuations)
underlying_bars.py  an underlying's latest price from one daily bar (reqHistoricalData), paced
"""
