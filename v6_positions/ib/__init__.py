"""The streaming leg: an ib_async session that streams active strategy legs and queues everything else.
No Dagster here; `v6_positions.defs` wraps it.

streamer.py       PositionStreamer: builds the owners below, in dependency order, and routes IB's events
stream_status.py  StreamStatus: the snapshot every owner contributes its own stats to
periodic.py       the wait of every periodic loop (sleep an interval, or end at once on stop)
ib_values.py      IB's value conventions (sentinels mean missing; which price represents a contract)
connection/       the read-only session, clientIds, backoff, IB's message codes
account/          what the account holds, IB's complete position list, the active legs
routing/          pure decisions: stream, rotate or queue; the risk score and the rotation schedule
lines/            holding lines at IB: the ledger, the allocation, the streams, the pool, IB's verdicts
rows/             observations from ticks and holdings, and where they go (handlers, position queue)
zero_line/        what IB answers without a line: valuation sweep, batch fetch, daily bars
"""
