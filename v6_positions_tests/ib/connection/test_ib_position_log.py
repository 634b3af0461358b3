"""What a connect writes to the log, against the simulator's demo book over TCP: one summary line of the
positions per account, never ib_async's line per position (216 of them here, again on every reconnect)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from v6_positions.ib.connection.position_log import IB_WRAPPER_LOGGER


def test_each_connect_logs_one_summary_line_and_no_line_per_position(
    sim, kit, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    held = [p for p in sim.book.positions.values() if p.position != 0]
    accounts = {account for account, _ in sim.book.positions}
    assert len(held) > 100 and len(accounts) == 1
    streamer = kit.streamer(kit.settings(sim.port))

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: streamer.status().synced, what="first sync")
            streamer.session.request_reconnect("test: resync")
            await kit.until(
                lambda: streamer.status().reconnects == 1 and streamer.status().synced, what="resync"
            )

    asyncio.run(scenario())
    from_ib_async = [r for r in caplog.records if r.name == IB_WRAPPER_LOGGER]
    assert not [r for r in from_ib_async if r.getMessage().startswith("position")]
    # Only the position lines are quieted: ib_async still says what the gateway told it (farm status).
    assert any("2104" in r.getMessage() for r in from_ib_async)
    summaries = [r.getMessage() for r in caplog.records if "positions at connect" in r.getMessage()]
    (account,) = accounts
    assert summaries == [f"positions at connect (clientId=10): {len(held)} ({account} {len(held)})"] * 2
