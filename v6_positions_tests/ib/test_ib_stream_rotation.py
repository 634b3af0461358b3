"""The stream with more active legs than lines, over TCP: the simulator with IB-like quote latency,
the real streamer, a temp lake. 150 active legs on 100 lines: the riskiest hold long-lived lines, the rest
rotate through the pool, every leg has rows no older than the computed bound, no 100 or 101."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import polars as pl

from v6_positions.lake import StrategyRegistry
from v6_positions.lake.schemas import STRATEGY_REGISTRY
from v6_positions.lake.tables import conform, table_uri


def _register(kit, sim, count: int) -> list[int]:
    """`count` option positions of the book as active legs, written in one append (as a bot would)."""
    options = sorted(
        (p.contract for p in sim.book.positions.values() if p.contract.sec_type == "OPT"),
        key=lambda c: c.conid,
    )[:count]
    first = options[0]
    StrategyRegistry(kit.root).add_active(
        first.conid, first.symbol, first.right, first.strike, first.expiry, 1
    )
    rows = [
        {
            "conid": c.conid,
            "symbol": c.symbol,
            "sec_type": "OPT",
            "right": c.right,
            "strike": c.strike,
            "expiry": c.expiry,
            "multiplier": c.multiplier,
            "strategy_id": 1,
            "active": True,
            "updated_at": datetime.now(UTC),
        }
        for c in options[1:]
    ]
    frame = conform(pl.DataFrame(rows), STRATEGY_REGISTRY)
    frame.write_delta(table_uri(kit.root, STRATEGY_REGISTRY.name), mode="append")
    return [c.conid for c in options]


def _newest_rows(kit) -> dict[int, datetime]:
    table = kit.table("streamed_positions")
    if table.is_empty():
        return {}
    newest = table.group_by("conid").agg(pl.col("written_at").max())
    return dict(zip(newest["conid"].to_list(), newest["written_at"].to_list(), strict=True))


def test_150_active_legs_on_100_lines_rotate_with_bounded_age_riskiest_long_lived(make_sim, kit):
    sim = make_sim("generated:160", max_lines=100, quote_latency=(0.1, 0.3))
    legs = _register(kit, sim, 150)
    streamer = kit.streamer(kit.settings(sim.port, rotation_lines=10, flush_interval_s=0.3))

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: streamer.status().synced, what="first sync")
            await kit.until(lambda: len(_newest_rows(kit)) == 150, timeout=60, what="rows for all 150 legs")
            await kit.until(lambda: len(streamer.status().streamed_conids) == 90, what="90 long-lived lines")
            status = streamer.status()
            assert status.rotation is not None and status.rotation.bound_s is not None
            bound = status.rotation.bound_s
            assert (len(status.streamed_conids), status.rotation.pool_lines) == (90, 10)
            # the riskiest hold the long-lived lines (a running stream keeps its line unless a rotating leg is
            # 1.5x riskier: no churn at the boundary as greeks drift)
            scores = status.risk_scores
            rotating = set(legs) - set(status.streamed_conids)
            assert max(scores[c] for c in rotating) <= 1.5 * min(scores[c] for c in status.streamed_conids)
            assert sorted(scores, key=scores.get, reverse=True)[0] in status.streamed_conids
            assert {leg.conid for leg in status.rotation_legs} == set(legs) - set(status.streamed_conids)
            worst = 0.0
            end = time.monotonic() + min(1.5 * bound, 25.0)
            while time.monotonic() < end:  # rows' ages sampled for one and a half rotation cycles
                await asyncio.sleep(1.0)
                now = datetime.now(UTC)
                newest = _newest_rows(kit)
                worst = max(worst, max((now - newest[c]).total_seconds() for c in legs))
            assert worst <= bound, (worst, bound)
            assert status.lines_in_use <= 100

    asyncio.run(scenario())
    stats = sim.stats()
    assert stats["max_lines_in_use"] <= 100
    assert "100" not in stats["errors"] and "101" not in stats["errors"]
    assert stats["peak_rate_by_client"]["10"] < 50


def test_a_leg_deactivated_mid_rotation_leaves_the_pool_at_once(make_sim, kit):
    sim = make_sim("generated:130", max_lines=100, quote_latency=(1.0, 1.0))  # slow quotes hold pool lines
    _register(kit, sim, 120)
    streamer = kit.streamer(kit.settings(sim.port, rotation_lines=10))
    registry = StrategyRegistry(kit.root)

    def rotating_held():
        return [leg.conid for leg in streamer.status().rotation_legs if leg.line == "held"]

    async def scenario():
        async with kit.running(streamer):
            await kit.until(lambda: rotating_held(), timeout=30, what="a leg on a pool line")
            victim = rotating_held()[0]
            assert sim.stats()["subscriptions_by_conid"].get(str(victim)) == 1
            registry.deactivate(victim)
            await kit.until(
                lambda: str(victim) not in sim.stats()["subscriptions_by_conid"],
                timeout=3,
                what="its line freed",
            )
            assert victim not in {leg.conid for leg in streamer.status().rotation_legs}
            await asyncio.sleep(1.5)
            assert str(victim) not in sim.stats()["subscriptions_by_conid"]

    asyncio.run(scenario())
    assert "101" not in sim.stats()["errors"]
