"""More active legs than lines: the rotating pool against "queue the overflow" (`V6_ROTATION_LINES=0`).

For each scenario the real simulator runs (100 lines, IB-like quote latency 100-300 ms, ticks every 0.25 s)
and an unmodified ib_async client drives the line scheduler (`ib/routing/rotation.py` through
`ib/lines/pool.py`) for N active legs ranked by `ib/routing/risk_score.py`. Optionally the trader's bot, a
second ib_async client, holds 40 lines first; the stream's budget is then the 60 IB still grants (what the
coexistence budget converges to).

Every 0.5 s each leg's quote age (now - its newest usable quote) is sampled once every leg has been quoted
(the first full cycle is the warm-up). A row's age adds at most one flush interval (1 s) to a quote's age.
Messages/s are the stream client's, counted by the simulator (mean over the run, and the most in any
sliding second); 100 and 101 are the errors the simulator sent to the stream client.
"Queue the overflow" (no rotating pool): a leg that does not fit is refreshed by the batch schedule only, so
its age runs up to the batch cadence (60 s with `V6_BATCH_CRON` every minute) plus the batch run.

Run: .venv/bin/python benchmarks/rotation_bench.py [--legs 50,150,300,1000] [--bot 0,40] [--min-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from datetime import UTC, date, datetime

from ib_async import IB, Contract

from v6_positions.ib.lines.pool import LineRotator
from v6_positions.ib.routing.risk_score import LegRiskInput, risk_score
from v6_positions.ib.routing.rotation import RotationConfig, RotationScheduler
from v6_positions.simulator import SimulatorThread, load_book

STREAM_ID = 10
BOT_ID = 70
MAX_LINES = 100
BATCH_CADENCE_S = 60.0


def _scores(sim: SimulatorThread, conids: list[int]) -> dict[int, float]:
    book = sim.book
    now = datetime.now(UTC)
    out: dict[int, float] = {}
    for conid in conids:
        c = book.contracts[conid]
        position = next(p.position for (_, cid), p in book.positions.items() if cid == conid)
        leg = LegRiskInput(
            conid,
            c.right,
            c.strike,
            date(int(c.expiry[:4]), int(c.expiry[4:6]), int(c.expiry[6:8])),
            c.multiplier,
            position,
            spot=book.underlyings[c.symbol].price,
            implied_vol=book.underlyings[c.symbol].volatility,
        )
        out[conid] = risk_score(leg, now).score
    return out


async def _scenario(legs: int, bot_lines: int, min_seconds: float) -> dict[str, object]:
    with SimulatorThread(
        load_book(f"generated:{legs + bot_lines + 10}"),
        max_lines=MAX_LINES,
        quote_latency=(0.1, 0.3),
        tick_interval=0.25,
        portfolio_interval=3600.0,
    ) as sim:
        options = sorted(c for c in sim.book.contracts if sim.book.contracts[c].sec_type == "OPT")
        bot = None
        if bot_lines:
            bot = IB()
            await bot.connectAsync("127.0.0.1", sim.port, clientId=BOT_ID, readonly=True)
            for conid in options[legs : legs + bot_lines]:
                bot.reqMktData(Contract(conId=conid, exchange="SMART"))
            while sim.stats()["lines_by_client"].get(str(BOT_ID), 0) < bot_lines:
                await asyncio.sleep(0.05)
        ib = IB()
        await ib.connectAsync("127.0.0.1", sim.port, clientId=STREAM_ID, readonly=True)
        conids = options[:legs]
        last_quote: dict[int, float] = {}
        sched = RotationScheduler(RotationConfig(), time.monotonic)
        rotator = LineRotator(ib, sched, lambda conid, _t: last_quote.__setitem__(conid, time.monotonic()))
        rotator.set_legs({c: Contract(conId=c, exchange="SMART") for c in conids}, _scores(sim, conids))
        rotator.set_budget(MAX_LINES - bot_lines)
        sim.reset_stats()
        started = time.monotonic()
        task = asyncio.create_task(rotator.run())
        try:
            while len(last_quote) < legs:  # warm-up: every leg quoted once
                await asyncio.sleep(0.1)
                if time.monotonic() - started > 600:
                    raise RuntimeError(f"only {len(last_quote)} of {legs} legs quoted in 600 s")
            warm = time.monotonic() - started
            bound = sched.bound_s()
            window = max(min_seconds, 2 * (bound or 0.0))
            samples: list[float] = []
            per_leg_max: dict[int, float] = {}
            end = time.monotonic() + window
            while time.monotonic() < end:
                await asyncio.sleep(0.5)
                now = time.monotonic()
                for conid in conids:
                    age = now - last_quote[conid]
                    samples.append(age)
                    per_leg_max[conid] = max(per_leg_max.get(conid, 0.0), age)
            elapsed = time.monotonic() - started
        finally:
            rotator.stop()
            await task
        stats = sim.stats()
        ours = stats["errors_by_client"].get(str(STREAM_ID), {})
        received = next((c["messages_received"] for c in stats["clients"] if c["client_id"] == STREAM_ID), 0)
        summary = sched.summary()
        ib.disconnect()
        if bot is not None:
            bot.disconnect()
        samples.sort()
        leg_maxes = sorted(per_leg_max.values())
        overflow = summary.overflow
        return {
            "legs": legs,
            "bot": bot_lines,
            "budget": MAX_LINES - bot_lines,
            "long": summary.long_lines,
            "pool": summary.pool_lines,
            "overflow": overflow,
            "warm_s": warm,
            "bound_s": bound,
            "max_age": leg_maxes[-1],
            "p95_age": samples[min(len(samples) - 1, math.ceil(0.95 * len(samples)) - 1)],
            "median_leg_max": statistics.median(leg_maxes),
            "msg_mean": received / elapsed,
            "msg_peak": stats["peak_rate_by_client"].get(str(STREAM_ID), 0),
            "e100": ours.get("100", 0),
            "e101": ours.get("101", 0),
            "max_lines": stats["max_lines_in_use"],
            "queue_max": BATCH_CADENCE_S if overflow else 0.25,
            "latency_p95": summary.latency_p95_s,
        }


def _print(rows: list[dict[str, object]]) -> None:
    head = (
        f"{'legs':>5} {'bot':>4} {'lines':>5} {'long':>5} {'pool':>4} {'rotate':>6} {'warm s':>7} "
        f"{'bound s':>8} {'max age':>8} {'p95 age':>8} {'msg/s':>6} {'peak/s':>6} {'100':>4} {'101':>4} "
        f"{'lines':>5} {'queue max':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        bound = "-" if r["bound_s"] is None else f"{r['bound_s']:.1f}"
        print(
            f"{r['legs']:>5} {r['bot']:>4} {r['budget']:>5} {r['long']:>5} {r['pool']:>4} {r['overflow']:>6} "
            f"{r['warm_s']:>7.1f} {bound:>8} {r['max_age']:>8.1f} {r['p95_age']:>8.1f} "
            f"{r['msg_mean']:>6.1f} {r['msg_peak']:>6} {r['e100']:>4} {r['e101']:>4} {r['max_lines']:>5} "
            f"{'>= ' + str(int(r['queue_max'])) if r['overflow'] else '0.25':>9}"
        )
    print(
        "\nlines = budget granted to the stream; long/pool = lines held long-lived / rotating; rotate = legs"
        " sharing the pool;\nwarm s = time until every leg had a quote; bound s = the scheduler's staleness"
        " bound; max/p95 age = quote age\nper leg after warm-up (s); msg/s = stream messages per second"
        " (mean, most in any second); 100/101 = errors\nto the stream; lines = most lines held at the"
        " simulator (all"
        " clients); queue max = the age an overflow leg\nreaches when it is only queued for the batch"
        f" (cadence {BATCH_CADENCE_S:.0f} s + run time)."
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--legs", default="50,150,300,1000")
    parser.add_argument("--bot", default="0,40", help="lines the bot holds, one scenario each")
    parser.add_argument("--min-seconds", type=float, default=20.0, help="measurement window at least")
    args = parser.parse_args()
    rows = []
    for bot_lines in (int(b) for b in args.bot.split(",")):
        for legs in (int(n) for n in args.legs.split(",")):
            rows.append(await _scenario(legs, bot_lines, args.min_seconds))
            print(f"done: {legs} legs, bot {bot_lines}", flush=True)
    print()
    _print(rows)


if __name__ == "__main__":
    asyncio.run(main())
