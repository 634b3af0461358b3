"""Lake benchmarks: figures to compare between changes (not a timed test).

Run: .venv/bin/python benchmarks/lake_bench.py [--flushes 300] [--day-hours 6.5] [--skip-basics]
Everything happens in a temporary directory that is removed at the end.

The "day" section measures the hot paths (book reads, stream flushes, batch writes, the queue's reads, marks
and change feed) at the start of a trading day and again after a simulated one, which should cost no more:
history written at volume in large appends (the rows a day of 1/s coalesced stream flushes and per-minute
batches would leave, compressed in time), and the queue re-queued and marked done many times.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import polars as pl
from deltalake import DeltaTable

from v6_positions.lake.history import HistoryWriter, PositionRow, write_rows
from v6_positions.lake.maintenance import maintain
from v6_positions.lake.positions import PositionsBook, read_positions
from v6_positions.lake.queue import PositionQueue, QueueItem
from v6_positions.lake.registry import StrategyRegistry
from v6_positions.lake.rows import history_frame, validated_records
from v6_positions.lake.schemas import spec_for
from v6_positions.lake.tables import TableHandle, conform, read_table, table_version


def timed(fn: Callable[[], object], repeat: int, *, best: bool = False) -> float:
    """Median (or, with best=True, the minimum) seconds of `repeat` calls."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return min(samples) if best else statistics.median(samples)


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
        queue.insert_many([QueueItem(account="DU1", conid=conid, symbol="SPY", priority=2, position=1.0)])
    elapsed = time.perf_counter() - started
    results.append(
        (
            "queue insert_many() of one row, one commit each",
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

    rows = queue.backlog().due
    latency = timed(lambda: queue.due(50), 7)
    results.append((f"due(50) at {rows:,} queued", f"{latency * 1000:.1f} ms"))
    queue.insert_many(items(100_000, 90_000))
    rows = queue.backlog().due
    latency = timed(lambda: queue.due(50), 7)
    results.append((f"due(50) at {rows:,} queued", f"{latency * 1000:.1f} ms"))
    latency = timed(lambda: queue.mark_done([("DU1", c) for c in range(100_000, 100_050)]), 3)
    results.append((f"mark_done(50 keys) at {rows:,} queued", f"{latency * 1000:.1f} ms"))
    latency = timed(lambda: queue.insert_many([QueueItem(account="DU1", conid=42, symbol="SPY")]), 3)
    results.append((f"insert_many() of one row at {rows:,} queued", f"{latency * 1000:.1f} ms"))


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


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """The fastest of `repeat` calls: on a shared machine the minimum is the least noisy figure."""
    return timed(fn, repeat, best=True)


# -- a trading day at 10,000 contracts ----------------------------------------------------------------------
CONTRACTS = 10_000
LEGS = 100


def _book_rows(conids: range, source: str, when: datetime, price: float) -> list[PositionRow]:
    return [
        PositionRow(
            "DU1",
            c,
            "SPY",
            right="C",
            strike=500.0,
            expiry="20261218",
            position=1.0,
            market_price=price,
            source=source,
            event_time=when,
        )
        for c in conids
    ]


class DayProbe:
    """The hot paths of a day, each measured the same way at the start and at the end."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.queue = PositionQueue(root)
        self.stream = HistoryWriter(root, compact_every=200)
        self.book = PositionsBook(root)  # the merge a flush does after its append, alone
        self.cursor = -1
        self.tick = 0

    def measure(self) -> dict[str, float]:
        out: dict[str, float] = {}
        out["read_positions (10,000 contracts)"] = best_of(lambda: read_positions(self.root), 7)

        def stream_flush() -> None:
            self.tick += 1
            now = datetime.now(UTC)
            self.stream.extend(_book_rows(range(1, LEGS + 1), "stream", now, 1.0 + self.tick / 100))
            self.stream.flush()

        out[f"stream flush, {LEGS} legs (history append + book merge)"] = best_of(stream_flush, 9)

        def book_merge_only() -> None:
            self.tick += 1
            records = validated_records(
                "positions", _book_rows(range(1, LEGS + 1), "stream", datetime.now(UTC), 2.0)
            )
            self.book.apply(history_frame(records, spec_for("streamed_positions"), datetime.now(UTC)))

        out[f"  of which book merge ({LEGS} rows into 10,000)"] = best_of(book_merge_only, 9)
        batch_rows = _book_rows(range(LEGS + 1, CONTRACTS + 1), "batch", datetime.now(UTC), 3.0)
        out["batch write_rows(9,900) (append + book merge)"] = best_of(
            lambda: write_rows(self.root, "queued_positions", batch_rows), 3
        )
        out["queue due() all (10,000 pending)"] = best_of(lambda: self.queue.due(), 5)
        out["queue due(500)"] = best_of(lambda: self.queue.due(500), 5)

        def sensor_tick() -> None:
            self.queue.insert_many(_queue_items(range(CONTRACTS + 1, CONTRACTS + 21)))  # 20 new keys
            version, changed = self.queue.changes_since(self.cursor)
            assert changed.height >= 20, changed.height
            self.cursor = version

        self.cursor = table_version(self.root, "position_queue")
        out["queue insert 20 + changes_since(cursor)"] = best_of(sensor_tick, 5)
        self.cursor = table_version(self.root, "position_queue")
        out["queue changes_since(cursor), nothing new"] = best_of(
            lambda: self.queue.changes_since(self.cursor), 5
        )
        keys = [("DU1", c) for c in range(1, CONTRACTS + 1)]
        out["queue mark_done(10,000 keys)"] = best_of(lambda: self.queue.mark_done(keys), 5)
        out["queue mark_failed(10,000 keys)"] = best_of(lambda: self.queue.mark_failed(keys, "bench"), 5)
        self.queue.insert_many(_queue_items(range(1, CONTRACTS + 1)))  # pending again for the next round
        return out


def _queue_items(conids: range) -> list[QueueItem]:
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
        )
        for c in conids
    ]


def _simulate_day(root: str, probe: DayProbe, hours: float, results: list[tuple[str, str]]) -> None:
    """Write a day's history in large appends, and churn the queue like a day of batches would."""
    started = time.perf_counter()
    seconds = int(hours * 3600)
    open_at = datetime.now(UTC).replace(hour=13, minute=30, second=0, microsecond=0) - timedelta(days=1)
    # streamed_positions: one coalesced row per leg per second-flush; 30 appends of ~hours*3600*100/30 rows
    chunks = 30
    per_chunk = seconds // chunks
    streamed = 0
    handle = TableHandle(root, "streamed_positions")
    for chunk in range(chunks):
        offsets = pl.int_range(0, per_chunk, eager=True) + chunk * per_chunk
        frame = pl.DataFrame({"second": offsets}).join(
            pl.DataFrame({"conid": list(range(1, LEGS + 1))}), how="cross"
        )
        frame = frame.with_columns(
            account=pl.lit("DU1"),
            symbol=pl.lit("SPY"),
            sec_type=pl.lit("OPT"),
            position=pl.lit(1.0),
            market_price=pl.lit(1.5),
            source=pl.lit("stream"),
            event_time=pl.lit(open_at) + pl.duration(seconds=pl.col("second")),
            written_at=pl.lit(open_at) + pl.duration(seconds=pl.col("second")),
        ).with_columns(event_date=pl.col("event_time").dt.date())
        conform(frame, spec_for("streamed_positions")).write_delta(handle.latest(create=True), mode="append")
        streamed += frame.height
    # queued_positions: every contract refreshed once a minute-batch cycle; ~hours*60 batches of 9,900
    batches = int(hours * 60)
    queued = 0
    qhandle = TableHandle(root, "queued_positions")
    per_append = 30  # batches per append
    for first in range(0, batches, per_append):
        count = min(per_append, batches - first)
        frame = pl.DataFrame({"batch": list(range(first, first + count))}).join(
            pl.DataFrame({"conid": list(range(LEGS + 1, CONTRACTS + 1))}), how="cross"
        )
        frame = frame.with_columns(
            account=pl.lit("DU1"),
            symbol=pl.lit("SPY"),
            sec_type=pl.lit("OPT"),
            position=pl.lit(1.0),
            market_price=pl.lit(2.5),
            source=pl.lit("batch"),
            event_time=pl.lit(open_at) + pl.duration(minutes=pl.col("batch")),
            written_at=pl.lit(open_at) + pl.duration(minutes=pl.col("batch")),
        ).with_columns(event_date=pl.col("event_time").dt.date())
        conform(frame, spec_for("queued_positions")).write_delta(qhandle.latest(create=True), mode="append")
        queued += frame.height
    # the queue: re-queued by portfolio pushes and marked done by batches, many times over
    churn = 40
    keys = [("DU1", c) for c in range(1, CONTRACTS + 1)]
    for _ in range(churn):
        probe.queue.insert_many(_queue_items(range(1, CONTRACTS + 1)))
        probe.queue.mark_done(keys)
    probe.queue.insert_many(_queue_items(range(1, CONTRACTS + 1)))
    # and the stream's own small commits: a few hundred real flushes on top
    for _ in range(300):
        probe.stream.extend(_book_rows(range(1, LEGS + 1), "stream", datetime.now(UTC), 1.7))
        probe.stream.flush()
    results.append(
        (
            f"simulated day ({hours} h): history rows written",
            f"streamed_positions {streamed:,}, queued_positions {queued:,}; queue churned {churn}x "
            f"(insert_many + mark_done of 10,000), +300 stream flushes; "
            f"{time.perf_counter() - started:.0f} s",
        )
    )
    results.append(
        (
            "table versions after the day",
            ", ".join(
                f"{name} v{table_version(root, name)}"
                for name in ("streamed_positions", "queued_positions", "position_queue", "positions")
            ),
        )
    )


def bench_day(root: str, hours: float, results: list[tuple[str, str]]) -> None:
    day = f"{root}/day"
    probe = DayProbe(day)
    # start of day: 10,000 queued contracts, a book of 10,000 (batch) + 100 streamed legs
    probe.queue.insert_many(_queue_items(range(1, CONTRACTS + 1)))
    write_rows(day, "queued_positions", _book_rows(range(1, CONTRACTS + 1), "batch", datetime.now(UTC), 1.0))
    start = probe.measure()
    # The day runs ~100x faster than real time, so the tables' retentions shrink alike: removed files and old
    # commits then leave the checkpoint and the log as they would during a real day.
    compressed = {
        "positions": {
            "delta.deletedFileRetentionDuration": "interval 9 seconds",
            "delta.logRetentionDuration": "interval 9 seconds",
        },
        "streamed_positions": {
            "delta.deletedFileRetentionDuration": "interval 36 seconds",
            "delta.logRetentionDuration": "interval 36 seconds",
        },
        "position_queue": {"delta.logRetentionDuration": "interval 36 seconds"},
    }
    for name, properties in compressed.items():
        DeltaTable(f"{day}/{name}").alter.set_table_properties(properties)
    results.append(("retentions during the compressed day", "15 min -> 9 s, 1 h -> 36 s (real / ~100)"))
    _simulate_day(day, probe, hours, results)
    end = probe.measure()
    width = max(len(name) for name in start)
    lines = [f"{'day: measure (best of N)'.ljust(width)}  {'start':>9}  {'end':>9}  end/start"]
    for name, first in start.items():
        last = end[name]
        lines.append(f"{name.ljust(width)}  {first * 1000:7.1f}ms  {last * 1000:7.1f}ms  {last / first:8.2f}")
    results.append(("__table__", "\n".join(lines)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flushes", type=int, default=300)
    parser.add_argument("--day-hours", type=float, default=6.5)
    parser.add_argument("--skip-basics", action="store_true", help="only the trading-day section")
    args = parser.parse_args()
    results: list[tuple[str, str]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lake-bench-") as root:
        if not args.skip_basics:
            bench_registry(root, results)
            bench_queue(root, results)
            bench_history(root, args.flushes, results)
        bench_day(root, args.day_hours, results)
    tables = [value for name, value in results if name == "__table__"]
    results = [(name, value) for name, value in results if name != "__table__"]
    width = max(len(name) for name, _ in results)
    print(f"{'measure'.ljust(width)}  result")
    print(f"{'-' * width}  {'-' * 40}")
    for name, value in results:
        print(f"{name.ljust(width)}  {value}")
    for table in tables:
        print()
        print(table)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
