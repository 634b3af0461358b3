"""Lines the trader's bot frees come back to the stream, with the rotating pool on (the default) and off.

The bot is a second, unmodified ib_async client on the same simulated gateway (100 lines). Each test reads
what the trader would see at the gateway: lines per client, the 101s the stream got (sampled every 0.1 s, so
a burst shows), and the stream's own probe counters; `orders_received == 0` is checked by `make_sim`.
Probe pacing: a probe IB refuses waits at least the backoff (1 s, +-20 % jitter, doubling to 15 s) before
the next; a probe IB grants may be followed at once (one round trip per line won back).
"""

from __future__ import annotations

import asyncio
import logging
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
    watching,
)

from v6_positions.lake import StrategyRegistry

# The shortest wait between two probes that did not win a line: the 1 s base backoff minus its 20 % jitter.
MIN_PROBE_GAP_S = 0.8


def legs_with_rows(kit, since: datetime | None = None) -> set[int]:
    table = kit.table("streamed_positions")
    if since is not None and not table.is_empty():
        table = table.filter(pl.col("written_at") >= since)
    return set() if table.is_empty() else set(table["conid"].unique().to_list())


def long_lived(streamer) -> set[int]:
    return set(streamer.status().streamed_conids)


def assert_probes_paced(streamer, watch, since: float) -> None:
    """Probes IB refused (or that found no line) are spaced by the backoff; a 101 never comes in a burst."""
    status = streamer.status()
    elapsed = time.monotonic() - since
    unwon = status.probes - status.probes_won
    assert unwon <= 2 + elapsed / MIN_PROBE_GAP_S, (status.probes, status.probes_won, elapsed)
    assert watch.most_101s_within(1.0) <= 2, "101s came in a burst"


@pytest.mark.parametrize("pool", ["on", "off"])
def test_lines_a_bot_frees_come_back_to_every_leg_within_30s(make_sim, kit, pool):
    sim = make_sim("generated:120")
    legs = register_legs(kit, sim, 12)
    # "off": V6_ROTATION_LINES=0 is a documented setting (legs that do not fit are queued only); freed lines
    # must come back there too. "on" runs the users' default.
    overrides = {"rotation_lines": 0} if pool == "off" else {}
    streamer = kit.streamer(kit.settings(sim.port, ib_client_id=STREAM_ID, **overrides))

    async def scenario():
        async with bot(sim, readonly=True) as trader:
            hold_lines(trader, non_leg_options(sim, legs, 95))
            await kit.until(lambda: lines_of(sim, BOT_ID) == 95, what="the bot holds 95 of 100 lines")
            async with kit.running(streamer), watching(sim, streamer) as watch:
                await kit.until(lambda: streamer.status().line_cap == 5, what="capped at the 5 free lines")
                capped_at = time.monotonic()
                if pool == "on":  # the 7 legs that do not fit rotate through the pool: every leg has rows
                    await kit.until(lambda: legs_with_rows(kit) == set(legs), timeout=15,
                                    what="rows for all 12 legs while the bot holds 95 lines")
                else:
                    await kit.until(lambda: len(streamer.status().unfit) == 7, what="7 legs queued")
                await asyncio.sleep(3.0)  # the bot keeps its lines: the stream only probes, paced
                assert watch.most_stream_lines(capped_at, time.monotonic()) <= 5
                assert lines_of(sim, BOT_ID) == 95 and errors_to(sim, BOT_ID, 101) == 0

                free_lines(trader)
                freed_at = time.monotonic()
                await kit.until(
                    lambda: long_lived(streamer) == set(legs) and lines_of(sim, STREAM_ID) == 12,
                    timeout=30, what="every leg back on a long-lived line",
                )
                status = streamer.status()
                assert status.unfit == [] and status.rotation is None  # the pool shrank to nothing
                assert_probes_paced(streamer, watch, capped_at)
                reclaimed_s = time.monotonic() - freed_at
                probes = status.probes
                await asyncio.sleep(1.0)  # every leg fits: no more probing
                assert streamer.status().probes == probes and lines_of(sim, STREAM_ID) == 12
        assert reclaimed_s < 30

    asyncio.run(scenario())


def test_24_legs_while_a_bot_holds_85_lines_then_frees_them(make_sim, kit):
    sim = make_sim("generated:130")
    legs = register_legs(kit, sim, 24)
    streamer = kit.streamer(kit.settings(sim.port, ib_client_id=STREAM_ID))

    async def scenario():
        async with bot(sim, readonly=True) as trader:
            hold_lines(trader, non_leg_options(sim, legs, 85))
            await kit.until(lambda: lines_of(sim, BOT_ID) == 85, what="the bot holds 85 lines")
            async with kit.running(streamer), watching(sim, streamer) as watch:
                await kit.until(lambda: streamer.status().line_cap == 15, what="capped at the 15 free lines")
                capped_at = time.monotonic()
                # 15 lines for 24 legs: the riskiest keep long-lived lines, the rest rotate; all get rows
                await kit.until(lambda: legs_with_rows(kit) == set(legs), timeout=15, what="rows for 24 legs")
                status = streamer.status()
                assert status.rotation is not None and status.rotation.pool_lines > 0
                assert status.lines_in_use <= 16  # the 15 granted and at most one probe
                await asyncio.sleep(2.0)
                assert watch.most_stream_lines(capped_at, time.monotonic()) <= 15

                free_lines(trader)
                await kit.until(
                    lambda: long_lived(streamer) == set(legs) and lines_of(sim, STREAM_ID) == 24,
                    timeout=30, what="all 24 legs on long-lived lines",
                )
                assert streamer.status().rotation is None
                assert_probes_paced(streamer, watch, capped_at)
                assert errors_to(sim, BOT_ID, 101) == 0

    asyncio.run(scenario())


def test_lines_the_bot_takes_back_mid_stream_cap_the_stream_without_a_burst(make_sim, kit):
    sim = make_sim("generated:130")
    legs = register_legs(kit, sim, 24)
    registry = StrategyRegistry(kit.root)
    streamer = kit.streamer(kit.settings(sim.port, ib_client_id=STREAM_ID))
    later, others = legs[12:], non_leg_options(sim, legs, 88)

    async def scenario():
        async with bot(sim, readonly=True) as trader:
            hold_lines(trader, others[:60])
            await kit.until(lambda: lines_of(sim, BOT_ID) == 60, what="the bot holds 60 lines")
            async with kit.running(streamer), watching(sim, streamer) as watch:
                await kit.until(lambda: lines_of(sim, STREAM_ID) == 24, what="24 legs stream")
                for conid in later:  # half the strategies close: their 12 lines are free again
                    registry.deactivate(conid)
                await kit.until(lambda: lines_of(sim, STREAM_ID) == 12, what="12 lines released")
                hold_lines(trader, others[60:])  # the bot takes the 28 free lines: the account is full
                await kit.until(lambda: lines_of(sim, BOT_ID) == 88, what="the bot holds 88 lines")
                refused_before = errors_to(sim, STREAM_ID, 101)
                taken_back_at, taken_back_wall = time.monotonic(), datetime.now(UTC)
                by_conid = {p.contract.conid: p.contract for p in sim.book.positions.values()}
                for conid in later:  # the strategies open again: 24 legs on the 12 lines IB still grants
                    c = by_conid[conid]
                    registry.add_active(conid, c.symbol, c.right, c.strike, c.expiry, 1)
                await kit.until(lambda: streamer.status().line_cap == 12, what="capped at the 12 lines held")
                await kit.until(lambda: set(later) <= legs_with_rows(kit, since=taken_back_wall), timeout=15,
                                what="the reopened legs rotate through the pool")
                await asyncio.sleep(2.0)
                assert watch.most_stream_lines(taken_back_at, time.monotonic()) <= 12
                assert lines_of(sim, BOT_ID) == 88 and errors_to(sim, BOT_ID, 101) == 0
                assert_probes_paced(streamer, watch, taken_back_at)
                # the first reopened leg found the account full; after that only probes asked (one at a time)
                status = streamer.status()
                refused = errors_to(sim, STREAM_ID, 101) - refused_before
                assert 1 <= refused <= 1 + status.probes - status.probes_won, (refused, status.probes)

                free_lines(trader)
                await kit.until(
                    lambda: long_lived(streamer) == set(legs) and lines_of(sim, STREAM_ID) == 24,
                    timeout=30, what="all 24 legs on long-lived lines again",
                )

    asyncio.run(scenario())


def test_a_capped_stream_probes_quietly_while_its_pool_rotates(make_sim, kit, caplog):
    # A bot keeps 90 of the 100 lines all along: the stream is capped at 10 for 12 legs, 8 long-lived and 4
    # rotating through a pool of 2. A probe wants one more long-lived line; when the leg it promotes holds a
    # pool line, the pool's refill is what IB refuses and the leg goes back to the pool. That happens at
    # every probe, all day while the bot holds its lines (the backoff is shortened here so that several
    # probes fit in a few seconds): the trader's log must not get a line per probe.
    sim = make_sim("generated:120")
    # IB's ticks already on the wire reach the client after its cancel: the pool cancels a line at every
    # rotation, and a leg's next request must not take them for IB's answer (a refused probe counted as won)
    sim.ticks_in_flight_at_cancel(True)
    legs = register_legs(kit, sim, 12)
    streamer = kit.streamer(kit.settings(sim.port, ib_client_id=STREAM_ID), probe_base_s=0.3, probe_cap_s=1.0)
    lines_loggers = "v6_positions.ib.lines."
    caplog.set_level(logging.DEBUG, logger=lines_loggers.rstrip("."))

    def promotions(since: int) -> int:
        return sum("promoted from the pool" in r.getMessage() for r in caplog.records[since:])

    async def scenario():
        async with bot(sim, readonly=True) as trader:
            hold_lines(trader, non_leg_options(sim, legs, 90))
            await kit.until(lambda: lines_of(sim, BOT_ID) == 90, what="the bot holds 90 lines")
            async with kit.running(streamer):
                await kit.until(lambda: (streamer.status().line_cap, lines_of(sim, STREAM_ID)) == (10, 10),
                                what="capped at the 10 free lines")
                settled_at = len(caplog.records)
                before = streamer.status()
                refused_before = errors_to(sim, STREAM_ID, 101)
                await kit.until(
                    lambda: promotions(settled_at) >= 3 and streamer.status().probes >= before.probes + 3,
                    timeout=20, what="three probes that promoted a leg from the pool",
                )
                after = streamer.status()
                assert after.probes_won == before.probes_won and after.line_cap == 10  # every probe refused
                assert errors_to(sim, STREAM_ID, 101) > refused_before
                assert lines_of(sim, BOT_ID) == 90 and errors_to(sim, BOT_ID, 101) == 0
                news = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records[settled_at:]
                        if r.name.startswith(lines_loggers) and r.levelno >= logging.INFO]
                assert news == []

    asyncio.run(scenario())
