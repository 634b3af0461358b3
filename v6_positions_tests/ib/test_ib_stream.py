"""The streaming leg against the simulator over TCP, with real Delta tables: routing and following change."""

from __future__ import annotations

import asyncio

import polars as pl
from lake_helpers import queue_items


def option_positions(sim) -> dict[int, object]:
    return {c: p for (_, c), p in sim.book.positions.items() if p.contract.sec_type == "OPT"}


def test_demo_book_streams_exactly_the_twelve_active_legs(sim, kit):
    legs = kit.register_demo_legs(sim)
    assert len(legs) == 12
    streamer = kit.streamer(kit.settings(sim.port))

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: streamer.status().synced, what="first sync")
            await kit.until(lambda: kit.table("streamed_positions")["conid"].n_unique() == 12,
                            what="12 conids")
            assert streamer.status().lines_in_use == 12

    asyncio.run(scenario())
    stats = sim.stats()
    assert stats["max_lines_in_use"] == 12
    assert "101" not in stats["errors"]
    assert set(kit.table("streamed_positions")["conid"].unique()) == set(legs)
    queued = {conid for _, conid in kit.queue().keys()}
    others = {conid for (_, conid) in sim.book.positions} - set(legs)
    assert queued == others
    assert set(option_positions(sim)) - set(legs) <= queued


def test_budget_of_ten_holds_ten_lines_and_queues_the_legs_beyond_at_priority_zero(sim, kit):
    legs = kit.register_demo_legs(sim)
    streamer = kit.streamer(kit.settings(sim.port, max_lines=12, reserved_lines=2))

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: streamer.status().synced and streamer.status().queue_commits >= 1)
            # new streams are added one at a time, each confirmed by IB's data first; 12 legs on 10 lines:
            # 8 long-lived, the other 4 rotate through a pool of 2 (and stay queued at priority 0)
            await kit.until(lambda: len(streamer.status().streamed_conids) == 8, what="8 long-lived streams")
            await kit.until(lambda: streamer.status().lines_in_use == 10, what="10 lines")
            status = streamer.status()
            assert len(status.unfit) == 4 and status.rotation is not None and status.rotation.pool_lines == 2
            assert {r.kind for r in streamer.reports} == {"over_budget"}

    asyncio.run(scenario())
    stats = sim.stats()
    assert stats["max_lines_in_use"] == 10 and "101" not in stats["errors"]
    urgent = [item for item in queue_items(kit.queue()) if item.priority == 0]
    assert len(urgent) == 4 and {item.conid for item in urgent} <= set(legs)


def test_following_activation_deactivation_and_close(sim, kit):
    from v6_positions.lake import StrategyRegistry

    kit.register_demo_legs(sim)
    registry = StrategyRegistry(kit.root)
    account = sim.book.accounts[0]
    # An option position that is not a strategy leg yet.
    extra = next(p.contract for p in sim.book.positions.values()
                 if p.contract.sec_type == "OPT" and p.strategy_id is None)
    streamer = kit.streamer(kit.settings(sim.port))

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: streamer.status().lines_in_use == 12, what="12 streams")
            registry.add_active(extra.conid, extra.symbol, extra.right, extra.strike, extra.expiry, 99)
            await kit.until(lambda: sim.stats()["subscriptions_by_conid"].get(str(extra.conid)) == 1,
                            timeout=5, what="activated leg streamed")
            assert streamer.status().lines_in_use == 13

            registry.deactivate(extra.conid)
            await kit.until(lambda: str(extra.conid) not in sim.stats()["subscriptions_by_conid"],
                            timeout=5, what="deactivated leg cancelled")
            await kit.until(lambda: (account, extra.conid) in kit.queue().keys("pending"), what="re-queued")

            closing = streamer.status().streamed_conids[0]
            sim.set_position(account, closing, 0)
            await kit.until(lambda: str(closing) not in sim.stats()["subscriptions_by_conid"],
                            timeout=5, what="closed position's stream cancelled")
            assert streamer.status().lines_in_use == 11
            return closing

    closing = asyncio.run(scenario())
    rows = kit.table("streamed_positions").filter(pl.col("conid") == closing).sort("event_time")
    assert rows["position"][-1] == 0  # the close is recorded, so the current book drops it
    assert sim.stats()["lines_in_use"] == 0


def test_bad_input_is_reported_and_never_stops_the_stream(sim, kit):
    from v6_positions.lake import StrategyRegistry

    legs = kit.register_demo_legs(sim)
    registry = StrategyRegistry(kit.root)
    account = sim.book.accounts[0]
    registry.add_active(777000001, "SPY", "C", 999.0, "20301220", 50)  # leg not held
    stock = next(p.contract for p in sim.book.positions.values() if p.contract.sec_type == "STK")
    registry.add_active(stock.conid, stock.symbol, "C", 1.0, "20301220", 51, sec_type="STK")  # non-option leg
    # A held leg whose contract the gateway does not know: reqMktData answers 200.
    sim.set_position(account, 777000002, 3, 120.0, symbol="SPY", expiry="20301220", strike=700.0, right="C")
    del sim.book.contracts[777000002]
    registry.add_active(777000002, "SPY", "C", 700.0, "20301220", 52)
    queued_option = next(c for (_, c), p in sim.book.positions.items()
                         if p.contract.sec_type == "OPT" and c not in legs and c != 777000002)
    streamer = kit.streamer(kit.settings(sim.port))

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: 777000002 in streamer.status().demoted, what="200 demotes")
            sim.set_position(account, queued_option, 0)  # a position of 0 for a queued contract
            await kit.until(lambda: any(i.conid == queued_option and i.position == 0
                                        for i in queue_items(kit.queue())), what="close queued")
            await kit.until(lambda: kit.table("streamed_positions")["conid"].n_unique() == 12)
            status = streamer.status()
            assert status.lines_in_use == 12 and status.connected
            return status

    status = asyncio.run(scenario())
    kinds = {(r.conid, r.kind) for r in streamer.reports}
    assert (777000001, "leg_not_held") in kinds
    assert (stock.conid, "sec_type_not_streamed") in kinds
    assert (777000002, "demoted") in kinds and "no_security" in status.demoted[777000002]
    items = {item.conid: item for item in queue_items(kit.queue())}
    assert items[777000002].priority == 1 and items[stock.conid].priority == 2
    assert sim.stats()["errors"].get("101") is None


def test_duplicate_registry_rows_stream_once(sim, kit):
    legs = kit.register_demo_legs(sim, count=2)
    frame = kit.table("strategy_registry")
    frame.head(1).write_delta(f"{kit.root}/strategy_registry", mode="append")  # a second row for one conid
    assert kit.table("strategy_registry").height == 3
    streamer = kit.streamer(kit.settings(sim.port))

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: streamer.status().lines_in_use == 2)
            await kit.until(lambda: kit.table("streamed_positions")["conid"].n_unique() == 2)

    asyncio.run(scenario())
    assert sim.stats()["max_lines_in_use"] == 2
    assert set(kit.table("streamed_positions")["conid"].unique()) == set(legs)


def test_a_failed_subscribe_does_not_stop_following_the_registry(sim, kit):
    from v6_positions.lake import StrategyRegistry

    kit.register_demo_legs(sim, count=2)
    extra = next(p.contract for p in sim.book.positions.values()
                 if p.contract.sec_type == "OPT" and p.strategy_id is None)
    streamer = kit.streamer(kit.settings(sim.port))
    real_request = streamer.ib.reqMktData
    failures: list[int] = []

    def flaky_request(contract, *args, **kwargs):
        if contract.conId == extra.conid and not failures:  # the socket broke mid-request, once
            failures.append(contract.conId)
            raise ConnectionError("Not connected")
        return real_request(contract, *args, **kwargs)

    streamer.ib.reqMktData = flaky_request

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: streamer.status().lines_in_use == 2, what="2 streams")
            StrategyRegistry(kit.root).add_active(extra.conid, extra.symbol, extra.right, extra.strike,
                                                  extra.expiry, 99)
            await kit.until(lambda: sim.stats()["subscriptions_by_conid"].get(str(extra.conid)) == 1,
                            timeout=8, what="streamed after the failed request")
            assert failures == [extra.conid] and streamer.status().lines_in_use == 3

    asyncio.run(scenario())
