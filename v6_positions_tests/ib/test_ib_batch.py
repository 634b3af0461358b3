"""The zero-line fetch for the batch path: positions + P&L, no market-data line, its own clientId."""

from __future__ import annotations

from v6_positions.config import Settings
from v6_positions.ib.batch import fetch_positions_zero_line
from v6_positions.lake import write_rows


def test_zero_line_fetch_uses_no_lines_and_rows_are_writable(sim, lake_root):
    legs = [c for (_, c), p in sim.book.positions.items() if p.contract.sec_type == "OPT"][:5]
    settings = Settings(lake_uri=lake_root, ib_port=sim.port)
    rows = fetch_positions_zero_line(settings, client_id=40, conids=legs, timeout_s=5)
    assert sorted(r.conid for r in rows) == sorted(legs)
    assert all(r.source == "batch" and r.market_value is not None and r.position for r in rows)
    assert all(r.market_price is not None and r.market_price >= 0 for r in rows)
    stats = sim.stats()
    assert stats["max_lines_in_use"] == 0 and stats["account_updates_holder"] is None
    assert write_rows(lake_root, "queued_positions", rows) == 5
