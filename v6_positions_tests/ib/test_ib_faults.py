"""Gateway faults: restart, 1100/1101/1102, 101 past the real limit, clientId in use."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import polars as pl
from ib_async import Contract
from lake_helpers import queue_items

from v6_positions.commands.stream import status_line


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


def test_1100_while_the_heartbeat_answers_waits_then_renews_only_after_the_grace_period(sim, kit):
    from dataclasses import replace

    from v6_positions.ib.connection.session import SessionConfig

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


def test_101_caps_the_lines_at_what_ib_grants_and_the_rest_wait_queued_at_priority_zero(make_sim, kit):
    sim = make_sim(max_lines=10)  # IB's real limit is lower than our (misconfigured) budget of 100
    legs = kit.register_demo_legs(sim)
    streamer = kit.streamer(kit.settings(sim.port, ib_client_id=12), probe_base_s=0.5, probe_cap_s=1.0)

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: streamer.status().line_cap == 10, timeout=10, what="capped at 10")
            # 10 lines for 12 legs: 8 long-lived, the other 4 rotate through a pool of 2 and stay queued at
            # priority 0; every leg gets rows
            await kit.until(lambda: kit.table("streamed_positions")["conid"].n_unique() == 12)
            await kit.until(lambda: sum(1 for i in queue_items(kit.queue()) if i.priority == 0) == 4)
            await asyncio.sleep(2.0)  # probes keep asking, one at a time, with backoff
            # (a probe in flight holds an 11th line in the ledger until IB's 101: wait for the settled state)
            await kit.until(lambda: (streamer.status().lines_in_use, len(streamer.status().unfit)) == (10, 4))
            status = streamer.status()
            assert status.connected and status.rotation is not None and status.rotation.pool_lines == 2
            assert status.demoted == {}  # a full account is not the contract's fault
            assert all("account full" in r.detail for r in streamer.reports if r.kind == "over_budget")

    asyncio.run(scenario())
    refused = sim.stats()["errors_by_client"]["12"]["101"]
    # One 101 when the account filled, then at most one per probe: 0.5 s, 1 s, 1 s ... over ~3 s.
    assert 1 <= refused <= 6, refused
    waiting = {i.conid for i in queue_items(kit.queue()) if i.priority == 0}
    assert waiting <= set(legs) and len(waiting) == 4


def test_a_second_stream_on_the_same_client_id_waits_and_takes_no_line(sim, kit):
    from dataclasses import replace

    from v6_positions.ib.connection.session import SessionConfig

    kit.register_demo_legs(sim, count=2)
    first = kit.streamer(kit.settings(sim.port, ib_client_id=20))
    settings = kit.settings(sim.port, ib_client_id=20)
    config = replace(SessionConfig.from_settings(settings), client_id_retry_base_s=0.2,
                     client_id_retry_cap_s=0.5, heartbeat_interval_s=1.0, connect_timeout_s=3.0)
    second = kit.streamer(settings, session_config=config)

    async def scenario():
        first_stop = asyncio.Event()
        first_task = asyncio.create_task(first.run(first_stop))
        await kit.until(lambda: first.status().synced and first.status().lines_in_use == 2)
        # The streamer counts a line when it sends reqMktData; the gateway counts it when the request arrives.
        await kit.until(lambda: sim.stats()["lines_by_client"] == {"20": 2}, what="2 lines at the gateway")
        async with kit.running(second):
            await kit.until(lambda: second.status().client_id_waits >= 3, what="second waits on 326")
            status = second.status()
            assert status.waiting_for_client_id and not status.connected and status.lines_in_use == 0
            assert status.client_id == 20
            stats = sim.stats()
            assert stats["lines_in_use"] == 2 and stats["lines_by_client"] == {"20": 2}
            assert [c["client_id"] for c in stats["clients"]] == [20]
            first_stop.set()
            await asyncio.wait_for(first_task, 30)
            await kit.until(lambda: second.status().synced and second.status().lines_in_use == 2,
                            what="second takes over on the same id")
            assert second.status().client_id == 20 and not second.status().waiting_for_client_id
            await kit.until(
                lambda: sim.stats()["lines_by_client"] == {"20": 2}, what="2 lines of the second"
            )

    asyncio.run(scenario())
    assert sim.stats()["errors_by_client"]["20"]["326"] >= 3


def test_a_helper_whose_id_range_is_busy_backs_off_then_connects_when_one_frees(sim):
    from dataclasses import replace

    from ib_async import IB

    from v6_positions.config import Settings
    from v6_positions.ib.connection.session import BATCH_FETCH, IBSession, SessionConfig

    settings = Settings(ib_port=sim.port, ib_client_id=49)  # helpers: 50..58; this one may use 50 and 51
    config = replace(SessionConfig.from_settings(settings), client_id=50, client_id_count=2,
                     backoff_base_s=0.2, backoff_cap_s=1.0, heartbeat_interval_s=1.0)
    session = IBSession(config, IB(), fetch=BATCH_FETCH)

    async def scenario():
        holders = [IB(), IB()]
        for client_id, holder in zip((50, 51), holders, strict=True):
            await holder.connectAsync("127.0.0.1", sim.port, clientId=client_id, readonly=True)
        stop = asyncio.Event()
        task = asyncio.create_task(session.run(stop))
        try:
            await _until(lambda: sim.stats()["errors"].get("326", 0) >= 4, "tried both ids twice")
            await asyncio.sleep(1.0)  # the span over which the retries are counted
            busy = sim.stats()["errors"]["326"]
            assert busy <= 10, f"{busy} attempts in ~2s: retrying busy ids without backoff"
            holders[1].disconnect()
            await _until(lambda: session.connected, "connected on 51", timeout=10)
            assert session.client_id == 51
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await session.close()
            for holder in holders:
                holder.disconnect()

    asyncio.run(scenario())


async def _until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_an_unreadable_registry_at_connect_keeps_the_last_known_legs_without_reconnecting(sim, kit):
    kit.register_demo_legs(sim, count=2)
    streamer = kit.streamer(kit.settings(sim.port))
    real_refresh = streamer.registry.refresh
    broken = [False]

    def refresh() -> bool:  # the lake is unreachable for a while
        if broken[0]:
            raise OSError("lake unreachable")
        return real_refresh()

    streamer.registry.refresh = refresh

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: streamer.status().synced and streamer.status().lines_in_use == 2)
            broken[0] = True
            sim.disconnect_all()  # a reconnect while the registry cannot be read
            await kit.until(lambda: streamer.status().reconnects == 1 and streamer.status().synced,
                            timeout=10, what="resynced")
            await kit.until(lambda: sim.stats()["lines_in_use"] == 2, what="the last known legs stream")
            await asyncio.sleep(1.0)  # a few registry polls, all failing
            status = streamer.status()
            assert status.registry_error is not None and "lake unreachable" in status.registry_error
            assert status.reconnects == 1 and sim.stats()["connections_accepted"] == 2  # no reconnect loop
            broken[0] = False
            await kit.until(lambda: streamer.status().registry_error is None, what="registry readable again")
            assert streamer.status().lines_in_use == 2

    asyncio.run(scenario())


def test_an_unreadable_registry_at_the_first_connect_queues_everything_and_streams_once_readable(sim, kit):
    kit.register_demo_legs(sim, count=2)
    streamer = kit.streamer(kit.settings(sim.port))
    real_refresh = streamer.registry.refresh
    broken_until = [float("inf")]

    def refresh() -> bool:
        if time.monotonic() < broken_until[0]:
            raise OSError("lake unreachable")
        return real_refresh()

    streamer.registry.refresh = refresh

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: streamer.status().synced, what="synced without a registry")
            await asyncio.sleep(1.0)
            assert sim.stats()["connections_accepted"] == 1  # no reconnect loop
            assert streamer.status().lines_in_use == 0 and streamer.status().queued_count > 0
            broken_until[0] = 0.0
            await kit.until(lambda: streamer.status().lines_in_use == 2, what="streams once readable")

    asyncio.run(scenario())


def test_a_failing_queue_write_shows_in_the_status_and_its_rows_land_once_the_lake_is_back(sim, kit):
    kit.register_demo_legs(sim, count=2)
    streamer = kit.streamer(kit.settings(sim.port))
    queue = streamer.queue_buffer.queue
    real_insert = queue.insert_many
    broken = [True]

    def insert_many(items) -> int:  # the lake is unreachable for a while
        if broken[0]:
            raise OSError("lake unreachable")
        return real_insert(items)

    queue.insert_many = insert_many

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: streamer.status().queue_flush_errors >= 1, what="a failed queue commit")
            status = streamer.status()
            assert status.synced and status.queue_rows_written == 0
            assert status.queued_count > 0 and "queue_flush_errors=" in status_line(status)
            broken[0] = False
            await kit.until(lambda: streamer.status().queue_rows_written >= status.queued_count,
                            what="the kept rows written")
        return status.queued_count

    queued = asyncio.run(scenario())
    assert len(kit.queue().keys()) >= queued  # nothing was lost while the lake failed
