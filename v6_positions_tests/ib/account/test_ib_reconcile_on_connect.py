"""Reconciliation at the stream's connect: a position that closed while no stream ran is closed in the book
(nothing else would ever close it); everything IB holds is left to the stream's own routing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import polars as pl

from v6_positions.lake.positions import apply_to_positions, read_positions
from v6_positions.lake.rows import PositionRow
from v6_positions.lake.tables import read_table


def test_a_position_closed_while_no_stream_ran_is_closed_at_connect(sim, kit):
    account, held_conid = next(iter(sim.book.positions))
    earlier = datetime.now(UTC) - timedelta(minutes=30)
    apply_to_positions(kit.root, [
        PositionRow(account=account, conid=held_conid, symbol="SPY", position=1.0, source="batch",
                    event_time=earlier),
        PositionRow(account=account, conid=987654, symbol="SPY", position=-3.0, source="batch",
                    event_time=earlier),  # closed at IB while the stream was down
    ])  # fmt: skip
    kit.register_demo_legs(sim)
    streamer = kit.streamer(kit.settings(sim.port))

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: streamer.status().reconcile.runs == 1, what="reconciliation at connect")
            status = streamer.status().reconcile
            assert status.last_fixed == 1 and "closed but open in the book 1" in status.last_summary

    asyncio.run(scenario())
    book = read_positions(kit.root)
    assert 987654 not in book["conid"].to_list()
    assert held_conid in book["conid"].to_list()  # held: left to the stream's routing
    close = read_table(kit.root, "queued_positions").filter(pl.col("conid") == 987654)
    assert close["source"].to_list() == ["reconcile"] and close["position"].to_list() == [0.0]
    assert sim.stats()["orders_received"] == 0
