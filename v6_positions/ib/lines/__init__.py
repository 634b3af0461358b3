"""Holding market-data lines at IB: every line the stream takes goes through here.

ledger.py         LineLedger: who holds each line (long-lived, pool, probe) and how many IB grants
allocation.py     LineAllocation: which held active legs hold a line now, applied one stream at a time
subscriptions.py  SubscriptionRegistry: the streams wanted and the ones live
cancel.py         MarketDataCanceller: a cancelled request's late ticks never reach the contract's next one
stream_errors.py  StreamErrors: IB's verdicts on the stream's requests (101, 200/354, 10090, 10197)
pool.py           LineRotator: the rotating pool's lines, driven by `routing/rotation.py`'s decisions
"""
