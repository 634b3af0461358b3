"""Lake benchmarks: figures to compare between changes (not a timed test).

Run: .venv/bin/python benchmarks/lake_bench.py [--flushes 1000]
Everything happens in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime

from v6_positions.lake.history import HistoryWriter, PositionRow
from v6_positions.lake.maintenance import maintain
from v6_positions.lake.queue import PositionQueue, QueueItem
from v6_positions.lake.registry import StrategyRegistry
from v6_positions.lake.tables import read_table


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of `repeat` calls."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def items(start: int, count: int) -> list[QueueItem]:
    return [
        QueueItem(
            account="DU1",
            conid=c,
            symbol="SPY",
            right="C",
            strike=500.0,
            expiry="20261218",
            position=1.0,
            market_price=1.25,
            priority=c % 3,
        )
        for c in range(start, start + count)
    ]


def bench_queue(root: str, results: list[tuple[str, str]]) -> None:
    queue = PositionQueue(f"{root}/q")
    queue.insert_many(items(1_000_000, 100))  # a non-empty target, as in production
    singles = 100
    started = time.perf_counter()
    for conid in range(1, singles + 1):
        queue.insert(conid, "SPY", 2, account="DU1", position=1.0)
    elapsed = time.perf_counter() - started
    results.append(
        (
            "queue insert(), one commit each",
            f"{singles / elapsed:,.0f} upserts/s ({elapsed / singles * 1000:.1f} ms each)",
        )
    )

    batch = items(10_000, 10_000)
    started = time.perf_counter()
    queue.insert_many(batch)
    elapsed = time.perf_counter() - started
    results.append(
        ("queue insert_many(10,000), one commit", f"{len(batch) / elapsed:,.0f} upserts/s ({elapsed:.2f} s)")
    )
    started = time.perf_counter()
    queue.insert_many(batch)  # the same keys again: all updates
    elapsed = time.perf_counter() - started
    results.append(
        (
            "queue insert_many(10,000) re-queue (updates)",
            f"{len(batch) / elapsed:,.0f} upserts/s ({elapsed:.2f} s)",
        )
    )

    rows = queue.pending_count()
    latency = timed(lambda: queue.get_batch(limit=50), 7)
    results.append((f"get_batch(limit=50) at {rows:,} queued", f"{latency * 1000:.1f} ms"))
    queue.insert_many(items(100_000, 90_000))
    rows = queue.pending_count()
    latency = timed(lambda: queue.get_batch(limit=50), 7)
    results.append((f"get_batch(limit=50) at {rows:,} queued", f"{latency * 1000:.1f} ms"))
    latency = timed(lambda: queue.mark_done([("DU1", c) for c in range(100_000, 100_050)]), 3)
    results.append((f"mark_done(50 keys) at {rows:,} queued", f"{latency * 1000:.1f} ms"))
    latency = timed(lambda: queue.insert(42, "SPY", account="DU1"), 3)
    results.append((f"insert() one row at {rows:,} queued", f"{latency * 1000:.1f} ms"))


def bench_registry(root: str, results: list[tuple[str, str]]) -> None:
    registry = StrategyRegistry(f"{root}/r")
    for conid in range(1, 13):
        registry.add_active(conid, "SPY", "C", 500.0 + conid, "20261218", conid // 4)
    registry.is_active(1)
    calls = 200_000
    started = time.perf_counter()
    for i in range(calls):
        registry.is_active(i % 20)
    per_call = (time.perf_counter() - started) / calls
    results.append(("is_active, hot (version unchanged)", f"{per_call * 1e6:.2f} µs/call"))
    other = StrategyRegistry(f"{root}/r")
    other.deactivate(3)
    latency = timed(lambda: registry.is_active(3), 1)
    results.append(("is_active, first call after a change (reload)", f"{latency * 1000:.1f} ms"))


def _flush_many(writer: HistoryWriter, flushes: int) -> float:
    """Seconds per flush of 10 rows."""
    now = datetime.now(UTC)
    started = time.perf_counter()
    for i in range(flushes):
        writer.extend(
            PositionRow(
                account="DU1",
                conid=1 + (i * 10 + j) % 100,
                symbol="SPY",
                position=1.0,
                market_price=1.0 + j,
                event_time=now,
            )
            for j in range(10)
        )
        writer.flush()
    return (time.perf_counter() - started) / flushes


def bench_history(root: str, flushes: int, results: list[tuple[str, str]]) -> None:
    # compact_every=0: the raw small-file situation that maintain() has to clean up.
    per_flush = _flush_many(HistoryWriter(f"{root}/h", compact_every=0), flushes)
    results.append(
        (f"history flush (10 rows) x {flushes:,}, no compaction", f"{per_flush * 1000:.1f} ms/flush")
    )
    before = timed(lambda: read_table(f"{root}/h", "streamed_positions"), 5)
    results.append((f"read streamed_positions after {flushes:,} flushes", f"{before * 1000:.1f} ms"))
    started = time.perf_counter()
    stats = maintain(f"{root}/h", retention_hours=0, enforce_retention_duration=False)["streamed_positions"]
    elapsed = time.perf_counter() - started
    results.append(
        (
            "maintain() (compact+checkpoint+vacuum)",
            f"{elapsed:.2f} s, files "
            f"{stats['files_before']} -> {stats['files_after']}, vacuumed {stats['files_vacuumed']}",
        )
    )
    after = timed(lambda: read_table(f"{root}/h", "streamed_positions"), 5)
    results.append(("read streamed_positions after maintain()", f"{after * 1000:.1f} ms"))
    writer = HistoryWriter(f"{root}/h2")  # default: compacts itself every 200 commits
    per_flush = _flush_many(writer, flushes)
    results.append(
        (
            f"history flush (10 rows) x {flushes:,}, compact_every={writer.compact_every}",
            f"{per_flush * 1000:.1f} ms/flush ({writer.compactions} compactions)",
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flushes", type=int, default=1000)
    args = parser.parse_args()
    results: list[tuple[str, str]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lake-bench-") as root:
        bench_registry(root, results)
        bench_queue(root, results)
        bench_history(root, args.flushes, results)
    width = max(len(name) for name, _ in results)
    print(f"{'measure'.ljust(width)}  result")
    print(f"{'-' * width}  {'-' * 40}")
    for name, value in results:
        print(f"{name.ljust(width)}  {value}")
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
