"""Gateway simulator throughput: tick messages/s delivered to 1 and 10 ib_async clients, and connect time.

Run: .venv/bin/python benchmarks/simulator_bench.py [--seconds S] [--lines N] [--connects K]
Tick messages are counted by the simulator (tickPrice/tickSize/tickOptionComputation written to sockets) and
cross-checked with the ticker updates the ib_async clients actually processed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time

from ib_async import IB, Contract

from v6_positions.simulator import GatewaySimulator, load_book


async def _connect(port: int, client_id: int) -> IB:
    ib = IB()
    await ib.connectAsync("127.0.0.1", port, clientId=client_id, readonly=True, timeout=10)
    return ib


async def tick_rate(clients: int, lines: int, seconds: float, tick_interval: float) -> tuple[float, float]:
    """(tick messages/s the simulator delivered, ticker updates/s the clients processed) for `lines` streams
    spread over `clients` clients."""
    book = load_book("generated:500")
    conids = sorted(conid for (_, conid) in book.positions)[:lines]
    async with GatewaySimulator(
        book, max_lines=lines, tick_interval=tick_interval, pacing_limit=10_000
    ) as sim:
        ibs = [await _connect(sim.port, 100 + i) for i in range(clients)]
        updates = 0

        def count(tickers: set) -> None:
            nonlocal updates
            updates += len(tickers)

        for i, ib in enumerate(ibs):
            ib.client.MaxRequests = 0  # the simulator's pacing limit is raised for this run
            ib.pendingTickersEvent += count
            for conid in conids[i::clients]:
                ib.reqMktData(Contract(conId=conid, exchange="SMART"))
        await asyncio.sleep(1.0)  # warm up: initial bursts delivered
        sent0, updates = sim.counters.tick_messages_sent, 0
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - started
        sent = sim.counters.tick_messages_sent - sent0
        processed = updates
        for ib in ibs:
            ib.disconnect()
    return sent / elapsed, processed / elapsed


async def connect_times(count: int) -> list[float]:
    async with GatewaySimulator(load_book("demo")) as sim:
        out = []
        for i in range(count):
            started = time.perf_counter()
            ib = await _connect(sim.port, i + 1)
            out.append(time.perf_counter() - started)
            ib.disconnect()
        return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--connects", type=int, default=50)
    parser.add_argument("--tick-interval", type=float, default=0.005)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    rows = []
    for clients in (1, 10):
        sent, processed = await tick_rate(clients, args.lines, args.seconds, args.tick_interval)
        rows.append(
            (
                f"ticks, {clients} client(s), {args.lines} streams",
                f"{sent:,.0f} msg/s",
                f"{processed:,.0f} ticker updates/s",
            )
        )
    times = await connect_times(args.connects)
    rows.append(
        (
            f"connect (demo book, 216 positions, n={len(times)})",
            f"p50 {_percentile(times, 0.5) * 1000:.1f} ms",
            f"p99 {_percentile(times, 0.99) * 1000:.1f} ms",
        )
    )
    rows.append(("", f"mean {statistics.mean(times) * 1000:.1f} ms", f"max {max(times) * 1000:.1f} ms"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"gateway simulator benchmark (tick interval {args.tick_interval}s, {args.seconds}s per run)")
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    asyncio.run(main())
