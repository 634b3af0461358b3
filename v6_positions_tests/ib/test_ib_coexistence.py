"""The stream shares the gateway with the trader's own bot (a second, unmodified ib_async client over TCP).

Each test asserts what the trader would see at the gateway (lines per client, 101s, who holds account
updates) and in Delta (queued payload ages, rows per account). `orders_received == 0` is checked by the
`sim`/`make_sim` fixtures after each test.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime

import polars as pl
import pytest
from gateway_bot import (
    BOT_ID,
    STREAM_ID,
    bot,
    errors_to,
    free_lines,
    hold_lines,
    lines_of,
    non_leg_options,
    register_legs,
)
from lake_helpers import queue_items

from v6_positions.ib.stream_status import StreamStatus
from v6_positions.ib.streamer import StreamStopped
from v6_positions.simulator import demo_strategy_legs


async def between_probes(kit, streamer, *, streamed: int, unfit: int) -> StreamStatus:
    """The first status with `streamed` long-lived legs and `unfit` legs beyond them. While IB caps the lines
    the stream probes for one more every second or so: the probed leg is planned as streamed but not live
    until IB answers (a 101 within milliseconds), so a snapshot taken during a probe shows one leg in neither
    list. The wait times out (and fails) if the two never hold together."""
    last: dict[str, StreamStatus] = {}

    def settled() -> bool:
        status = last["status"] = streamer.status()
        return (len(status.streamed_conids), len(status.unfit)) == (streamed, unfit)

    await kit.until(settled, what=f"{streamed} long-lived and {unfit} unfit")
    return last["status"]


def test_lines_held_by_a_bot_cap_the_stream_and_are_won_back_when_the_bot_frees_them(make_sim, kit):
    sim = make_sim("generated:40", max_lines=10)
    legs = register_legs(kit, sim, 12)
    streamer = kit.streamer(kit.settings(sim.port, ib_client_id=STREAM_ID), probe_base_s=0.3, probe_cap_s=1.0)

    async def scenario():
        async with bot(sim, readonly=True) as trader:
            hold_lines(trader, non_leg_options(sim, legs, 6))
            await kit.until(lambda: lines_of(sim, BOT_ID) == 6, what="bot holds 6 lines")
            started = time.monotonic()
            async with kit.running(streamer):
                await kit.until(lambda: streamer.status().line_cap == 4, what="stream capped at 4")
                # 4 lines for 12 legs: the 2 riskiest keep long-lived lines, 10 rotate through a pool of 2;
                # all 10 stay queued at priority 0 (the batch backs the pool)
                await kit.until(lambda: sum(1 for i in queue_items(kit.queue()) if i.priority == 0) == 10,
                                what="10 legs queued at priority 0")
                await kit.until(lambda: lines_of(sim, STREAM_ID) == 4, what="the pool's lines held")
                await asyncio.sleep(2.0)  # the bot keeps its lines; the stream only probes, one at a time
                status = await between_probes(kit, streamer, streamed=2, unfit=10)
                assert status.demoted == {}
                assert lines_of(sim, BOT_ID) == 6 and lines_of(sim, STREAM_ID) <= 4
                refused_while_held = errors_to(sim, STREAM_ID, 101)
                # first 101 at the limit, then one per probe (0.3, 0.6, 1, 1 s ... each +-20 %): never a burst
                # of 8. Probes are paced in time, so their count is bounded by the time elapsed, whatever the
                # load: the first 101, two fast probes, then at most one per 0.8 s.
                elapsed = time.monotonic() - started
                assert 1 <= refused_while_held <= 3 + math.ceil(elapsed / 0.8), (refused_while_held, elapsed)
                assert errors_to(sim, BOT_ID, 101) == 0  # the bot never lost a line to us

                free_lines(trader)
                await kit.until(lambda: lines_of(sim, STREAM_ID) == 10, timeout=10,
                                what="freed lines won back")
                # 10 lines for 12 legs: 8 long-lived, the 4 others share a pool of 2 (the pool shrank to
                # what the 2 legs beyond the account's lines need)
                status = await between_probes(kit, streamer, streamed=8, unfit=4)
                assert status.rotation is not None
                assert set(status.unfit) <= {i.conid for i in queue_items(kit.queue()) if i.priority == 0}
                # every leg has rows in Delta: long-lived or rotating
                await kit.until(lambda: kit.table("streamed_positions")["conid"].n_unique() == 12, timeout=10)
                # the bot can take its lines back only once we release some: the account stays full
                await kit.until(lambda: sim.stats()["lines_in_use"] == 10, what="the account full")

    asyncio.run(scenario())


def test_a_bot_holding_account_updates_keeps_them_and_queued_payloads_keep_refreshing(make_sim, kit):
    sim = make_sim("generated:30")
    register_legs(kit, sim, 4)
    streamer = kit.streamer(kit.settings(sim.port, ib_client_id=STREAM_ID), valuation_interval_s=0.5)

    def queued_payloads() -> pl.DataFrame:
        return kit.table("position_queue").filter(pl.col("priority") == 2)

    def refreshed_since(since: datetime) -> bool:
        times = queued_payloads()["payload_time"]
        return len(times) == 26 and times.null_count() == 0 and times.min() > since

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: streamer.status().synced and streamer.status().lines_in_use == 4)
            async with bot(sim) as trader:  # ib_async defaults: reqAccountUpdates for the single account
                await kit.until(lambda: sim.stats()["account_updates_holder"] == BOT_ID)
                assert trader.portfolio(), "the bot gets its portfolio"
                since = datetime.now(UTC)
                await kit.until(
                    lambda: refreshed_since(since), timeout=15,
                    what="every queued payload refreshed while the bot holds account updates",
                )
                assert queued_payloads()["market_value"].null_count() == 0
                # a reconnect and a 1101 must not take account updates back from the bot
                streamer.session.request_reconnect("test: a new socket")  # the bot's connection stays
                await kit.until(lambda: streamer.status().synced and streamer.status().reconnects == 1,
                                timeout=10)
                assert sim.stats()["account_updates_holder"] == BOT_ID
                sim.connectivity(1100)
                sim.connectivity(1101)
                await kit.until(lambda: lines_of(sim, STREAM_ID) == 4, what="streams back after 1101")
                await trader.reqAccountUpdatesAsync(trader.managedAccounts()[0])  # the bot resubscribes
                since = datetime.now(UTC)
                await kit.until(
                    lambda: refreshed_since(since), timeout=15,
                    what="payloads refresh after the reconnect and 1101",
                )
                assert sim.stats()["account_updates_holder"] == BOT_ID

    asyncio.run(scenario())
    stats = sim.stats()
    assert str(STREAM_ID) not in stats["account_updates_requests_by_client"]  # we never asked for them
    assert errors_to(sim, BOT_ID, 2100) == 0  # nobody got a 2100 because of us
    assert errors_to(sim, STREAM_ID, 2100) == 0
    assert stats["pacing_violations"] == 0


def test_a_client_id_held_by_a_half_closed_socket_is_waited_for_and_kept(sim, kit):
    kit.register_demo_legs(sim, count=3)
    sim.hold_client_id(STREAM_ID, 1.5)  # our previous run's socket, not yet dropped by the gateway
    streamer = kit.streamer(kit.settings(sim.port, ib_client_id=STREAM_ID))

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: streamer.status().waiting_for_client_id, what="waiting on 326")
            assert sim.stats()["lines_in_use"] == 0
            await kit.until(lambda: streamer.status().synced and lines_of(sim, STREAM_ID) == 3, timeout=10,
                            what="streams on the same id once the gateway dropped the old socket")
            status = streamer.status()
            assert status.client_id == STREAM_ID and not status.waiting_for_client_id
            assert status.client_id_waits >= 1

    asyncio.run(scenario())
    assert [c for c in sim.stats()["errors_by_client"] if c != str(STREAM_ID)] == []  # no other id tried


def test_a_login_with_several_accounts_follows_all_of_them_with_valuations(make_sim, kit):
    sim = make_sim("demo-fa")
    legs = kit.register_demo_legs(sim)
    streamer = kit.streamer(kit.settings(sim.port, ib_client_id=STREAM_ID), valuation_interval_s=1.0)

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: streamer.status().synced and streamer.status().lines_in_use == 12)
            assert streamer.status().accounts == ["DU1000001", "DU1000002"]
            # the SPY legs held in both accounts take one line each and stream rows for both accounts
            await kit.until(
                lambda: kit.table("streamed_positions").filter(pl.col("conid") == legs[0])["account"]
                .n_unique() == 2,
                what="a leg held in two accounts streams for both",
            )
            await kit.until(
                lambda: kit.table("position_queue").filter(pl.col("account") == "DU1000002").height == 21
                and kit.table("position_queue").filter(pl.col("account") == "DU1000002")["market_value"]
                .null_count() == 0,
                timeout=30, what="the second account's queued holdings valued",
            )
            assert streamer.status().valuations_missing == 0

    asyncio.run(scenario())
    assert sim.stats()["lines_in_use"] == 0


def test_an_account_the_login_does_not_manage_stops_the_stream_with_a_clear_message(make_sim, kit):
    sim = make_sim("demo-fa")
    kit.register_demo_legs(sim)
    streamer = kit.streamer(kit.settings(sim.port, ib_client_id=STREAM_ID, ib_account="DU999"))

    async def scenario():
        await asyncio.wait_for(streamer.run(asyncio.Event()), 20)

    with pytest.raises(StreamStopped, match=r"V6_IB_ACCOUNT='DU999' is not managed.*DU1000001, DU1000002"):
        asyncio.run(scenario())
    assert sim.stats()["subscribe_count"] == 0  # not one line taken


def test_one_configured_account_of_several_is_the_only_one_followed(make_sim, kit):
    sim = make_sim("demo-fa")
    kit.register_demo_legs(sim)
    streamer = kit.streamer(kit.settings(sim.port, ib_client_id=STREAM_ID, ib_account="DU1000002"))

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: streamer.status().synced and streamer.status().lines_in_use == 2)
            await kit.until(lambda: kit.table("position_queue").height == 21)
            assert set(kit.table("position_queue")["account"]) == {"DU1000002"}
            assert streamer.status().accounts == ["DU1000002"]

    asyncio.run(scenario())


def test_partial_data_warnings_and_a_competing_session_never_demote(sim, kit):
    legs = kit.register_demo_legs(sim)
    sim.set_quirks(legs[0], data_warning=10090)
    sim.set_quirks(legs[1], data_warning=10091)
    streamer = kit.streamer(kit.settings(sim.port, ib_client_id=STREAM_ID))

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: lines_of(sim, STREAM_ID) == 12, what="all 12 legs stream")
            await kit.until(lambda: set(streamer.status().partial_data) == {legs[0], legs[1]})
            assert streamer.status().demoted == {}
            sim.competing_session(True)
            await kit.until(lambda: streamer.status().competing_session, what="10197 surfaced in status")
            status = streamer.status()
            assert status.demoted == {} and status.lines_in_use == 12 and lines_of(sim, STREAM_ID) == 12
            sim.competing_session(False)
            await kit.until(lambda: not streamer.status().competing_session, what="data flows again")

    asyncio.run(scenario())


def test_a_bot_writing_registry_rows_with_its_own_column_and_a_bad_row_never_stops_the_stream(sim, kit):
    from deltalake import write_deltalake

    legs = kit.register_demo_legs(sim, count=2)
    streamer = kit.streamer(kit.settings(sim.port, ib_client_id=STREAM_ID))
    by_conid = {p.contract.conid: p.contract for p in sim.book.positions.values()}

    def bot_row(conid: int, **overrides) -> dict:
        c = by_conid[conid]
        row = {"conid": conid, "symbol": c.symbol, "sec_type": "OPT", "right": c.right, "strike": c.strike,
               "expiry": c.expiry, "multiplier": 100, "strategy_id": 7, "active": True,
               "updated_at": datetime.now(UTC), "note": "written by the bot"}
        return {**row, **overrides}

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: lines_of(sim, STREAM_ID) == 2)
            third, fourth = (leg.conid for leg in demo_strategy_legs(sim.book)[2:4])
            rows = pl.DataFrame([bot_row(third), bot_row(fourth, right="X")]).with_columns(
                pl.col("updated_at").dt.replace_time_zone("UTC")
            )
            # The bot writes directly, with its own extra column (schema merge) and one bad row.
            write_deltalake(f"{kit.root}/strategy_registry", rows, mode="append",
                            schema_mode="merge")
            await kit.until(lambda: streamer.status().registry_invalid_rows == 1, what="bad row reported")
            await kit.until(lambda: lines_of(sim, STREAM_ID) == 3, what="the bot's good leg streams")
            status = streamer.status()
            assert status.connected and status.registry_error is None and status.reconnects == 0
            assert set(status.streamed_conids) == {*legs, third}  # the bad row is skipped, not streamed

    asyncio.run(scenario())


def test_a_one_sided_wing_streams_the_model_price_and_missing_greeks_stay_empty(sim, kit):
    legs = kit.register_demo_legs(sim, count=2)
    sim.set_quirks(legs[0], one_sided=True, stale_last=9.99, missing_greeks=["vega", "theta"])
    streamer = kit.streamer(kit.settings(sim.port, ib_client_id=STREAM_ID))

    def rows_of(conid: int) -> pl.DataFrame:
        return kit.table("streamed_positions").filter(pl.col("conid") == conid)

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: rows_of(legs[0]).filter(pl.col("delta").is_not_null()).height > 0,
                            what="rows with greeks for the wing")

    asyncio.run(scenario())
    wing = rows_of(legs[0]).filter(pl.col("market_price").is_not_null())
    assert wing.height > 0
    assert (wing["market_price"] != 9.99).all()  # never the stale last
    assert wing["bid"].null_count() == wing.height  # no bid: not a price of 0 or -1
    assert wing["vega"].null_count() == wing.height and wing["theta"].null_count() == wing.height
    other = rows_of(legs[1]).filter(pl.col("vega").is_not_null())
    assert other.height > 0  # a normal contract keeps its greeks
