"""The zero-line fetch for the batch path: positions + P&L, no market-data line, its own clientId, paced."""

from __future__ import annotations

import time

from v6_positions.config import Settings
from v6_positions.ib.zero_line.position_fetch import fetch_positions_zero_line
from v6_positions.lake import write_rows
from v6_positions.simulator.protocol import In


def test_zero_line_fetch_uses_no_lines_and_rows_are_writable(sim, lake_root):
    legs = [c for (_, c), p in sim.book.positions.items() if p.contract.sec_type == "OPT"][:5]
    settings = Settings(lake_uri=lake_root, ib_port=sim.port)
    rows = fetch_positions_zero_line(settings, client_id=40, conids=legs, timeout_s=5).rows
    assert sorted(r.conid for r in rows) == sorted(legs)
    assert all(r.source == "batch" and r.market_value is not None and r.position for r in rows)
    assert all(r.market_price is not None and r.market_price >= 0 for r in rows)
    stats = sim.stats()
    assert stats["max_lines_in_use"] == 0 and stats["account_updates_holder"] is None
    assert write_rows(lake_root, "queued_positions", rows) == 5


def test_a_few_hundred_positions_never_trip_pacing_even_when_the_gateway_stalls(make_sim, lake_root):
    sim = make_sim("generated:300")
    held = sorted((a, c) for (a, c), p in sim.book.positions.items() if p.position)
    assert len(held) >= 250
    wanted = held[::2]  # 150 of them: four paced chunks, enough to trip a burst (>= 100), quick to run
    _stall_once_on_first_pnl_request(sim, seconds=1.2)
    settings = Settings(lake_uri=lake_root, ib_port=sim.port)
    conids = [c for _, c in wanted]
    rows = fetch_positions_zero_line(settings, client_id=41, conids=conids, timeout_s=10).rows
    assert sorted((r.account, r.conid) for r in rows) == wanted
    assert all(r.market_value is not None for r in rows), "every row has its P&L value"
    stats = sim.stats()
    assert stats["pacing_violations"] == 0 and "100" not in stats["errors"]
    assert stats["max_lines_in_use"] == 0


def _stall_once_on_first_pnl_request(sim, seconds: float) -> None:
    """Block the simulator's loop once, as a gateway starved of CPU would: whatever the client sends
    meanwhile piles up in the socket and is read in one go afterwards (a client that paces only by its own
    send times then trips the 50 messages/s limit)."""
    handlers = sim.sim.dispatcher.handlers
    original = handlers[In.REQ_PNL_SINGLE]
    stalled: list[bool] = []

    def stall_then_answer(session, fields):
        if not stalled:
            stalled.append(True)
            time.sleep(seconds)
        original(session, fields)

    handlers[In.REQ_PNL_SINGLE] = stall_then_answer
