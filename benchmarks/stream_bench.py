"""Streaming-leg benchmark: a `generated:2000` book with 40 active legs, simulator in its own process.

Prints: lines used by this design vs streaming every position with plain ib_async (and the 101s that
costs), tick-to-Delta-visible latency p50/p99, rows per commit, the streamer's CPU time and peak memory.
Run: .venv/bin/python benchmarks/stream_bench.py [--seconds 20] [--legs 40] [--book generated:2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime

from ib_async import IB

from v6_positions.config import Settings
from v6_positions.ib.rows.handlers import DeltaLakePositionWriter
from v6_positions.ib.streamer import PositionStreamer
from v6_positions.lake import HistoryWriter, PositionQueue, StrategyRegistry


class TimedWriter(HistoryWriter):
    """HistoryWriter that notes when each written row became visible (its commit returned).

    The writer coalesces to the newest row per contract, so the rows a flush writes are the buffer's values
    at flush time (read from the writer's buffer: a benchmark may look inside)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.latencies: list[float] = []

    def flush(self) -> int:
        with self._buffer_lock:
            times = [record["event_time"] for record in self._buffer.values()]
        written = super().flush()
        visible = datetime.now(UTC)
        self.latencies.extend((visible - t).total_seconds() for t in times[:written])
        return written


def start_simulator(
    book: str,
    max_lines: int,
    *extra: str,
    python: Sequence[str] = (sys.executable, "-m", "v6_positions.cli"),
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, int, int]:
    """The gateway simulator in its own process; returns it with its API port and control port."""
    proc = subprocess.Popen(
        [*python, "--log-level", "WARNING", "simulate", "--port", "0", "--control-port", "0", "--book", book,
         "--max-lines", str(max_lines), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    port = control = 0
    while not (port and control):
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("simulator exited before listening")
        if m := re.search(r"listening on [\d.]+:(\d+)", line):
            port = int(m.group(1))
        if m := re.search(r"control API on http://[\d.]+:(\d+)", line):
            control = int(m.group(1))
    return proc, port, control


def control(port: int, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    url = f"http://127.0.0.1:{port}{path}"
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def plain_ib_async(port: int, client_id: int) -> tuple[int, int]:
    """Stream every position directly, the naive way. Returns (requests, 101s)."""
    ib = IB()
    errors: list[int] = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append(code)
    await ib.connectAsync("127.0.0.1", port, clientId=client_id, readonly=True, timeout=20)
    positions = ib.positions()
    for position in positions:
        contract = position.contract
        contract.exchange = contract.exchange or "SMART"
        ib.reqMktData(contract, genericTickList="", snapshot=False)
    deadline = time.monotonic() + 90  # ib_async throttles at 45 msg/s: 2,000 requests take ~45 s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        answered = len(errors) + sum(1 for t in ib.tickers() if t.time is not None)
        if answered >= len(positions):
            break
    ib.disconnect()
    return len(positions), errors.count(101)


async def run_streamer(settings: Settings, seconds: float, legs: int):
    """Returns (status while running, final status, writer, CPU seconds, seconds to first sync, seconds
    until every leg streams — new streams are added one at a time, each confirmed by IB's data)."""
    writer = TimedWriter(settings.lake_uri, flush_interval_s=settings.flush_interval_s)
    streamer = PositionStreamer(
        settings, StrategyRegistry(settings.lake_uri), PositionQueue(settings.lake_uri),
        [DeltaLakePositionWriter(writer)], registry_poll_s=2.0,
    )
    stop = asyncio.Event()
    cpu0, wall0 = time.process_time(), time.monotonic()
    task = asyncio.create_task(streamer.run(stop))
    while not streamer.status().synced:
        await asyncio.sleep(0.05)
    sync_s = time.monotonic() - wall0
    while streamer.status().lines_in_use < legs and time.monotonic() - wall0 < 60:
        await asyncio.sleep(0.01)
    lines_s = time.monotonic() - wall0
    await asyncio.sleep(seconds)
    during = streamer.status()
    stop.set()
    await task
    return during, streamer.status(), writer, time.process_time() - cpu0, sync_s, lines_s


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--book", default="generated:2000")
    parser.add_argument("--legs", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--flush-interval", type=float, default=1.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("ib_async").setLevel(logging.CRITICAL)

    proc, port, control_port = start_simulator(args.book, max_lines=100)
    try:
        positions = control(control_port, "/stats")["positions"]
        requests, naive_101 = asyncio.run(plain_ib_async(port, client_id=90))
        naive = control(control_port, "/stats")
        control(control_port, "/reset-stats", {})

        root = tempfile.mkdtemp(prefix="stream_bench_")
        registry = StrategyRegistry(root)
        ib = IB()
        ib.connect("127.0.0.1", port, clientId=91, readonly=True)
        options = [p for p in ib.positions() if p.contract.secType == "OPT"]
        options.sort(key=lambda p: p.contract.conId)
        ib.disconnect()
        for p in options[: args.legs]:
            c = p.contract
            registry.add_active(c.conId, c.symbol, c.right, c.strike, c.lastTradeDateOrContractMonth, 1)
        settings = Settings(
            lake_uri=root, ib_port=port, ib_client_id=92, flush_interval_s=args.flush_interval
        )

        tracemalloc.start()
        during, status, writer, cpu_s, sync_s, lines_s = asyncio.run(
            run_streamer(settings, args.seconds, min(args.legs, 100))
        )
        _, peak_py = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        ours = control(control_port, "/stats")
    finally:
        proc.terminate()
        proc.wait(10)

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"book {args.book}: {positions} positions, {args.legs} active legs, line limit 100")
    sim_101 = naive["errors"].get("101", 0)
    print(f"plain ib_async, stream every position: {requests} requests, max lines in use "
          f"{naive['max_lines_in_use']}, 101 errors {naive_101} (simulator counted {sim_101})")
    ours_101 = ours["errors"].get("101", 0)
    print(f"this design: max lines in use {ours['max_lines_in_use']}, 101 errors {ours_101}, "
          f"streamed {len(during.streamed_conids)}, queued {during.queued_count} "
          f"(queue rows written {status.queue_rows_written} in {status.queue_commits} commits)")
    print(f"start-up (connect + route + queue commit): {sync_s:.2f}s; "
          f"every leg streaming after {lines_s:.2f}s")
    print(f"run {args.seconds:.0f}s: updates {status.updates_received}, rows in Delta {writer.rows_flushed}, "
          f"commits {writer.commits}, rows/commit {writer.rows_flushed / max(1, writer.commits):.1f}")
    p50, p99 = (percentile(writer.latencies, q) * 1000 for q in (0.50, 0.99))
    print(f"tick-to-Delta-visible latency (flush interval {args.flush_interval}s): "
          f"p50 {p50:.0f} ms, p99 {p99:.0f} ms over {len(writer.latencies)} rows")
    print(f"streamer CPU time {cpu_s:.2f}s over {sync_s + args.seconds:.1f}s wall "
          f"({100 * cpu_s / (sync_s + args.seconds):.1f}% of one core, includes Delta commits)")
    print(f"peak memory: Python allocations {peak_py / 2**20:.1f} MiB (tracemalloc), "
          f"process max RSS {rss_mb:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
