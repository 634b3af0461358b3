"""Gateway faults: restart, 1100/1101/1102, 101 past the real limit, clientId in use."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import polars as pl
from ib_async import Contract


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
            # A round trip after the 1102 (not reqCurrentTime: ib_async keys that one future by name and the
            # heartbeat shares it): any (wrong) reaction sent before it has reached the gateway.
            conid = next(iter(sim.stats()["subscriptions_by_conid"]))
            assert await asyncio.wait_for(streamer.ib.reqContractDetailsAsync(Contract(conId=int(conid))), 5)
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


def test_every_client_id_busy_backs_off_then_connects_when_one_frees(sim, kit):
    from dataclasses import replace

    from ib_async import IB

    from v6_positions.ib.session import SessionConfig

    settings = kit.settings(sim.port, ib_client_id=50)
    config = replace(SessionConfig.from_settings(settings), client_id_count=2, backoff_base_s=0.2,
                     backoff_cap_s=1.0, heartbeat_interval_s=1.0)
    streamer = kit.streamer(settings, session_config=config)

    async def scenario():
        holders = [IB(), IB()]
        for client_id, holder in zip((50, 51), holders, strict=True):
            await holder.connectAsync("127.0.0.1", sim.port, clientId=client_id, readonly=True)
        try:
            async with kit.running(streamer):
                await kit.until(lambda: sim.stats()["errors"].get("326", 0) >= 4, what="tried both ids twice")
                await asyncio.sleep(1.0)  # the span over which the retries are counted
                busy = sim.stats()["errors"]["326"]
                assert busy <= 10, f"{busy} attempts in ~2s: retrying busy ids without backoff"
                holders[1].disconnect()
                await kit.until(lambda: streamer.status().synced, timeout=10, what="connected on 51")
                assert streamer.status().client_id == 51
        finally:
            for holder in holders:
                holder.disconnect()

    asyncio.run(scenario())


def test_a_resync_that_keeps_failing_reconnects_with_backoff(sim, kit):
    kit.register_demo_legs(sim, count=2)
    streamer = kit.streamer(kit.settings(sim.port))
    real_refresh = streamer.registry.refresh
    broken_until = [float("inf")]

    def refresh() -> bool:  # the lake is unreachable for a while: every resync after connect fails
        if time.monotonic() < broken_until[0]:
            raise OSError("lake unreachable")
        return real_refresh()

    streamer.registry.refresh = refresh

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: sim.stats()["connections_accepted"] >= 2, what="a failed resync")
            await asyncio.sleep(1.0)
            accepted = sim.stats()["connections_accepted"]
            assert accepted <= 6, f"{accepted} connections in ~2s: reconnecting without backoff"
            broken_until[0] = 0.0
            await kit.until(lambda: streamer.status().synced and streamer.status().lines_in_use == 2,
                            timeout=10, what="synced once the lake is back")

    asyncio.run(scenario())
