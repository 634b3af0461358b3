"""Gateway faults: restart, 1100/1101/1102, 101 past the real limit, clientId in use."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import polars as pl


def test_restart_with_five_seconds_down_reconnects_and_resumes(sim, kit):
    kit.register_demo_legs(sim)
    streamer = kit.streamer(kit.settings(sim.port))

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: streamer.status().lines_in_use == 12)
            sim.restart(5.0)
            restarted_at = datetime.now(UTC)
            await kit.until(lambda: not streamer.status().connected, timeout=5, what="disconnect seen")
            await kit.until(lambda: streamer.status().synced and streamer.status().reconnects == 1,
                            timeout=20, what="reconnected")
            await kit.until(lambda: sim.stats()["lines_in_use"] == 12, what="lines back")
            await kit.until(
                lambda: kit.table("streamed_positions")
                .filter((pl.col("event_time") > restarted_at) & (pl.col("source") == "stream"))["conid"]
                .n_unique() == 12,
                timeout=10, what="rows resume for all 12",
            )
            stats = sim.stats()
            assert all(n == 1 for n in stats["subscriptions_by_conid"].values())
            assert len(stats["subscriptions_by_conid"]) == 12

    asyncio.run(scenario())


def test_1101_resubscribes_and_1102_changes_nothing(sim, kit):
    kit.register_demo_legs(sim)
    streamer = kit.streamer(kit.settings(sim.port))

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: sim.stats()["lines_in_use"] == 12)
            sim.connectivity(1100)
            sim.connectivity(1101)  # the simulator drops every subscription, as IB does
            await kit.until(lambda: sim.stats()["lines_in_use"] == 12, timeout=5, what="re-subscribed")
            subscribed = sim.stats()["subscribe_count"]
            sim.connectivity(1100)
            sim.connectivity(1102)
            await kit.until(lambda: not streamer.session.link_lost, timeout=5)
            await asyncio.sleep(0)  # let any (wrong) reaction reach the wire before counting
            await kit.until(lambda: streamer.status().updates_received > 0)
            stats = sim.stats()
            assert stats["subscribe_count"] == subscribed and stats["lines_in_use"] == 12
            assert all(n == 1 for n in stats["subscriptions_by_conid"].values())
            assert streamer.status().reconnects == 0

    asyncio.run(scenario())


def test_1100_without_restore_reconnects_after_the_grace_period(sim, kit):
    from dataclasses import replace

    from v6_positions.ib.session import SessionConfig

    kit.register_demo_legs(sim, count=3)
    settings = kit.settings(sim.port)
    config = replace(SessionConfig.from_settings(settings), connectivity_grace_s=0.5, backoff_base_s=0.2,
                     heartbeat_interval_s=1.0)
    streamer = kit.streamer(settings, session_config=config)

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: sim.stats()["lines_in_use"] == 3)
            sim.connectivity(1100)
            await kit.until(lambda: streamer.status().reconnects == 1 and streamer.status().synced,
                            timeout=10)
            await kit.until(lambda: sim.stats()["lines_in_use"] == 3)
            sim.connectivity(1102)  # feed back for the simulator

    asyncio.run(scenario())


def test_101_from_ib_demotes_to_the_queue_and_keeps_running(make_sim, kit):
    sim = make_sim(max_lines=10)  # IB's real limit is lower than our (misconfigured) budget of 100
    legs = kit.register_demo_legs(sim)
    streamer = kit.streamer(kit.settings(sim.port))

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: len(streamer.status().demoted) == 2, timeout=5, what="two demotions")
            await kit.until(lambda: kit.table("streamed_positions")["conid"].n_unique() == 10)
            await kit.until(lambda: sum(1 for i in kit.queue().items() if i.priority == 1) == 2)
            status = streamer.status()
            assert status.connected and status.lines_in_use == 10
            assert all("max_tickers" in reason for reason in status.demoted.values())

    asyncio.run(scenario())
    assert sim.stats()["errors"].get("101") == 2
    demoted = {i.conid for i in kit.queue().items() if i.priority == 1}
    assert demoted <= set(legs)


def test_client_id_in_use_moves_to_the_next_id(sim, kit):
    kit.register_demo_legs(sim, count=2)
    first = kit.streamer(kit.settings(sim.port, ib_client_id=20))
    second = kit.streamer(kit.settings(sim.port, ib_client_id=20))

    async def scenario():
        async with kit.running(first):
            await kit.until(lambda: first.status().synced)
            async with kit.running(second):
                await kit.until(lambda: second.status().synced, timeout=10)
                assert (first.status().client_id, second.status().client_id) == (20, 21)

    asyncio.run(scenario())
    assert sim.stats()["errors"].get("326") == 1
