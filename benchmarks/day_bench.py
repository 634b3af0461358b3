"""A trading day at 10,000 contracts: is the Dagster side's cost flat in history? (figures, not a timed test)

Per storage (the embedded SQLite instance as deploy/local/dagster.yaml configures it, and PostgreSQL on a
throwaway server), on real Delta tables in a temp dir and a temporary Dagster instance:

  start of day  the real stream (PositionStreamer, unmodified ib_async) runs against the gateway simulator
                with `--legs` active legs for `--stream-seconds`, then `--contracts` contracts are queued;
                measured: the queue sensor's tick, the batch schedule's tick, the batch runs that refresh
                every pending contract (partition-range runs, queued payloads: zero streaming lines), a read
                of `positions`.
  the day       `--hours` of trading compressed: streamed history of the legs at one coalesced row per leg per
                `--tick-seconds` (what the stream's writer commits), portfolio pushes every `--push-minutes`
                that re-queue every contract with a new payload, and after each push the batch's lake work
                (library code the asset runs: rows committed, book merged, queue marked). History is written
                directly as Delta appends, one commit per `--commit-minutes`, at the volume the day would
                produce; the Dagster event log gets `--dagster-batches` real batch runs spread over the day.
  end of day    the same measurements, after one more push and the real stream again.

Prints both moments side by side and a final line per storage: `flat: batch x.xx, sensor x.xx, read x.xx,
risk x.xx` (end / start; risk = one strategy/underlying risk refresh). Goal: <= 1.2.

Run: .venv/bin/python benchmarks/day_bench.py [--storages sqlite,postgres] [--contracts 10000] [--hours 6.5]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import statistics
import sys
import tempfile
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import dagster as dg
import polars as pl

from v6_positions.config import Settings
from v6_positions.definitions import build_definitions
from v6_positions.defs.batch.refresh import refresh_contracts
from v6_positions.defs.jobs import BATCH_JOB_NAME
from v6_positions.ib.rows.handlers import DeltaLakePositionWriter
from v6_positions.ib.streamer import PositionStreamer
from v6_positions.lake import HistoryWriter, PositionQueue, StrategyRegistry
from v6_positions.lake.history import PositionRow, write_rows
from v6_positions.lake.positions import read_positions
from v6_positions.lake.rows import POSITION_ROW_COLUMNS
from v6_positions.lake.schemas import spec_for
from v6_positions.lake.tables import conform, ensure_table
from v6_positions.risk.refresh import refresh_risk
from v6_positions.simulator import SimulatorThread
from v6_positions.simulator.demo_books import generated_book

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "v6_positions_tests"))
from dagster_bench import environment, instance_storage, timed  # noqa: E402  (this folder is on sys.path)
from postgres_server import PostgresUnavailable, start_postgres  # noqa: E402

T = TypeVar("T")
ACCOUNT = "DU9000001"
SYMBOLS = ("SPY", "QQQ", "IWM", "AAPL", "MSFT", "NVDA", "TSLA", "AMZN")
# Batch runs store their per-partition materializations in batches of this size: dagster-postgres natively,
# SQLite through deploy/local/dagster.yaml's BatchedSqliteStorage (what `make demo` runs on).
EVENT_ENV = {"DAGSTER_EVENT_BATCH_SIZE": "1000"}
SAMPLES = 3  # pushes (and sensor ticks) per measurement


@dataclass(slots=True)
class Moment:
    batch_s: float = 0.0
    batch_runs: int = 0
    batch_contracts: int = 0
    sensor_s: float = 0.0  # tick after a portfolio push (every contract's row changed)
    sensor_quiet_s: float = 0.0  # tick with nothing new
    schedule_s: float = 0.0
    read_ms: float = 0.0
    risk_s: float = 0.0  # one risk refresh (strategy_risk + underlying_risk), what the every-minute job runs
    book_rows: int = 0
    streamed_rows: int = 0
    queued_rows: int = 0
    event_rows: int = 0
    partitions: int = 0


@dataclass(slots=True)
class Day:
    lake: str
    defs: dg.Definitions
    instance: dg.DagsterInstance
    contracts: list[dict[str, object]]
    legs: list[PositionRow]
    cursor: str | None = None
    run_ids: list[str] = field(default_factory=list)
    pushes: int = 0


# -- the stream, for real, against the simulator -------------------------------------------------------------
def register_legs(lake: str, port: int, legs: int) -> int:
    from ib_async import IB

    ib = IB()
    ib.connect("127.0.0.1", port, clientId=91, readonly=True)
    try:
        options = sorted(
            (p for p in ib.positions() if p.contract.secType == "OPT"), key=lambda p: p.contract.conId
        )
    finally:
        ib.disconnect()
    registry = StrategyRegistry(lake)
    for p in options[:legs]:
        c = p.contract
        registry.add_active(c.conId, c.symbol, c.right, c.strike, c.lastTradeDateOrContractMonth, 1)
    return min(legs, len(options))


async def stream_for(settings: Settings, seconds: float, legs: int) -> int:
    """Run the stream; returns the rows it flushed to streamed_positions."""
    writer = HistoryWriter(settings.lake_uri, flush_interval_s=settings.flush_interval_s)
    streamer = PositionStreamer(
        settings, StrategyRegistry(settings.lake_uri), PositionQueue(settings.lake_uri),
        [DeltaLakePositionWriter(writer)], registry_poll_s=2.0,
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(streamer.run(stop))
    deadline = time.monotonic() + 60
    while streamer.status().lines_in_use < legs and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(seconds)
    stop.set()
    await task
    return writer.rows_flushed


# -- the day at volume, through the lake ---------------------------------------------------------------------
def synthetic_contracts(count: int, expiry: str) -> list[dict[str, object]]:
    return [
        {"account": ACCOUNT, "conid": 950_000_000 + i, "symbol": SYMBOLS[i % 8], "right": "CP"[i % 2],
         "strike": 100.0 + i // 16, "expiry": expiry, "position": float(1 + i % 5), "average_cost": 250.0}
        for i in range(count)
    ]  # fmt: skip


def push_portfolio(day: Day, when: datetime) -> None:
    """IB's portfolio push as the stream handles it: every unstreamed position re-queued with its payload."""
    price = 1.0 + day.pushes * 0.01
    PositionQueue(day.lake).insert_many(
        {**c, "market_price": price, "market_value": price * 100 * float(c["position"]), "payload_time": when}
        for c in day.contracts
    )
    day.pushes += 1


def write_stream_history(day: Day, start: datetime, minutes: float, tick_s: float) -> int:
    """`minutes` of streamed history for the legs, one coalesced row per leg per `tick_s`, in one commit."""
    steps = max(1, int(minutes * 60 / tick_s))
    n = len(day.legs)
    base = pl.DataFrame(
        [{c: getattr(leg, c) for c in POSITION_ROW_COLUMNS} for leg in day.legs],
        schema=dict(POSITION_ROW_COLUMNS),
    )
    frame = pl.concat([base] * steps).with_columns(
        event_time=pl.lit(start)
        + pl.duration(milliseconds=(pl.int_range(0, steps * n) // n) * int(tick_s * 1000)),
        market_price=1.0 + (pl.int_range(0, steps * n) % 997) / 1000.0,
    )
    frame = frame.with_columns(written_at=pl.col("event_time"), event_date=pl.col("event_time").dt.date())
    spec = spec_for("streamed_positions")
    conform(frame, spec).write_delta(ensure_table(day.lake, spec.name), mode="append")
    # The book gets each leg's newest row through the lake writer, as the stream's flush does.
    at = start + timedelta(minutes=minutes)
    newest = [dataclasses.replace(leg, event_time=at) for leg in day.legs]
    write_rows(day.lake, "streamed_positions", newest)
    return frame.height + len(newest)


def lake_batch(day: Day, keys: list[str]) -> None:
    """The batch's lake work without Dagster (the asset's library code): rows, book merge, queue marks."""
    settings = Settings(lake_uri=day.lake)
    refresh_contracts(settings, keys, fetch=False, batch_client_id=0, log=logging.getLogger("day_bench"))


# -- the Dagster side, measured ------------------------------------------------------------------------------
def sensor_tick(day: Day) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=day.instance, cursor=day.cursor, resources=day.defs.resources)
    result = day.defs.resolve_sensor_def("queue_partitions")(context)
    for request in result.dynamic_partitions_requests or []:
        day.instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
    day.cursor = result.cursor
    return result


def schedule_tick(day: Day, at: datetime) -> list[dg.RunRequest]:
    with dg.build_schedule_context(
        instance=day.instance, scheduled_execution_time=at, resources=day.defs.resources
    ) as context:
        result = day.defs.resolve_schedule_def("queued_positions_batch").evaluate_tick(context)
    return list(result.run_requests or [])


def run_batches(day: Day, requests: list[dg.RunRequest]) -> None:
    job = day.defs.resolve_job_def(BATCH_JOB_NAME)
    config = {
        "ops": {"queued_positions": {"config": {"zero_line_fetch": "never"}}},
        "loggers": {"console": {"config": {"log_level": "ERROR"}}},  # a daemon's run writes no console
    }
    for request in requests:
        result = job.execute_in_process(
            instance=day.instance, tags=request.tags, run_config=config, raise_on_error=False
        )
        if not result.success:
            raise RuntimeError(f"batch run {result.run_id} failed")
        day.run_ids.append(result.run_id)


def event_rows(day: Day) -> int:
    return sum(len(day.instance.all_logs(run_id)) for run_id in day.run_ids)


def measure(day: Day, at: datetime) -> Moment:
    moment = Moment()
    after_push, quiet = [], []
    for _ in range(SAMPLES):  # ticks of ~0.1 s: the median of a few, not one sample's noise
        push_portfolio(day, at)  # every contract pending again, every queue row changed
        after_push.append(timed(lambda: sensor_tick(day))[1])
        quiet.append(timed(lambda: sensor_tick(day))[1])
    moment.sensor_s, moment.sensor_quiet_s = statistics.median(after_push), statistics.median(quiet)
    requests, moment.schedule_s = timed(lambda: schedule_tick(day, at))
    moment.batch_runs = len(requests)
    moment.batch_contracts = sum(int(r.tags.get("v6/due", 0)) for r in requests)
    _, moment.batch_s = timed(lambda: run_batches(day, requests))
    reads = []
    for _ in range(5 * SAMPLES):
        book, seconds = timed(lambda: read_positions(day.lake))
        reads.append(seconds)
    moment.read_ms = statistics.median(reads) * 1000
    moment.risk_s = statistics.median(timed(lambda: refresh_risk(day.lake, 300.0))[1] for _ in range(SAMPLES))
    moment.book_rows = book.height
    moment.streamed_rows = _rows(day.lake, "streamed_positions")
    moment.queued_rows = _rows(day.lake, "queued_positions")
    moment.event_rows = event_rows(day)
    moment.partitions = len(day.instance.get_dynamic_partitions("queued_contracts"))
    return moment


def _rows(lake: str, table: str) -> int:
    return pl.scan_delta(f"{lake}/{table}").select(pl.len()).collect().item()


def simulate_day(day: Day, args: argparse.Namespace, open_at: datetime) -> dict[str, int]:
    """The compressed day between the two measurements; returns what it wrote."""
    minutes = args.hours * 60
    pushes = int(minutes // args.push_minutes)
    dagster_every = max(1, pushes // args.dagster_batches) if args.dagster_batches else 0
    written = {"stream_rows": 0, "stream_commits": 0, "pushes": 0, "lake_batches": 0, "dagster_batches": 0}
    clock = 0.0
    for push in range(1, pushes + 1):
        until = push * args.push_minutes
        while clock < until:
            step = min(args.commit_minutes, until - clock)
            written["stream_rows"] += write_stream_history(
                day, open_at + timedelta(minutes=clock), step, args.tick_seconds
            )
            written["stream_commits"] += 1
            clock += step
        when = open_at + timedelta(minutes=clock)
        push_portfolio(day, when)
        written["pushes"] += 1
        sensor_tick(day)
        if dagster_every and push % dagster_every == 0 and written["dagster_batches"] < args.dagster_batches:
            run_batches(day, schedule_tick(day, when))
            written["dagster_batches"] += 1
        else:
            keys = day.instance.get_dynamic_partitions("queued_contracts")
            _, seconds = timed(lambda k=keys: lake_batch(day, k))
            written.setdefault("first_lake_batch_ms", int(seconds * 1000))
            written["last_lake_batch_ms"] = int(seconds * 1000)
            written["lake_batches"] += 1
    return written


def bench_storage(storage: str, args: argparse.Namespace, postgres) -> tuple[Moment, Moment, dict[str, int]]:
    with ExitStack() as stack:
        lake = stack.enter_context(tempfile.TemporaryDirectory(prefix="day_bench_lake_"))
        home = stack.enter_context(tempfile.TemporaryDirectory(prefix="day_bench_home_"))
        stack.enter_context(environment(EVENT_ENV))
        overrides = instance_storage(postgres, "tuned", home)
        instance = stack.enter_context(dg.instance_for_test(overrides, temp_dir=home))
        sim = stack.enter_context(SimulatorThread(generated_book(args.book), max_lines=100))
        legs = register_legs(lake, sim.port, args.legs)
        settings = Settings(lake_uri=lake, ib_port=sim.port, ib_client_id=92, flush_interval_s=1.0)
        asyncio.run(stream_for(settings, args.stream_seconds, legs))
        open_at = datetime.now(UTC).replace(microsecond=0)
        expiry = (open_at + timedelta(days=60)).strftime("%Y%m%d")
        streamed = (
            pl.scan_delta(f"{lake}/streamed_positions")
            .select("account", "conid", "symbol", "right", "strike", "expiry")
            .unique(["account", "conid"])
            .collect()
        )
        leg_rows = [
            PositionRow(**row, position=1.0, source="stream") for row in streamed.iter_rows(named=True)
        ]
        day = Day(
            lake, build_definitions(settings), instance, synthetic_contracts(args.contracts, expiry), leg_rows
        )
        push_portfolio(day, open_at)
        sensor_tick(day)  # the first tick: every contract becomes a partition
        lake_batch(day, instance.get_dynamic_partitions("queued_contracts"))  # the morning's first refresh
        asyncio.run(stream_for(settings, args.stream_seconds, legs))  # as at the end: the stream re-queues
        start = measure(day, open_at)
        written = simulate_day(day, args, open_at)
        asyncio.run(stream_for(settings, args.stream_seconds, legs))
        end = measure(day, open_at + timedelta(hours=args.hours))
        written["legs"] = legs
        return start, end, written


ROWS = (
    ("batch runs (contracts)", lambda m: f"{m.batch_runs} ({m.batch_contracts})"),
    ("batch wall s", lambda m: f"{m.batch_s:.2f}"),
    ("batch contracts/s", lambda m: f"{m.batch_contracts / m.batch_s:,.0f}" if m.batch_s else "-"),
    ("sensor tick after a push s (median of 3)", lambda m: f"{m.sensor_s:.3f}"),
    ("sensor tick, nothing new s (median of 3)", lambda m: f"{m.sensor_quiet_s:.3f}"),
    ("schedule tick s", lambda m: f"{m.schedule_s:.3f}"),
    ("positions read ms (median of 15)", lambda m: f"{m.read_ms:.1f}"),
    ("positions rows", lambda m: f"{m.book_rows:,}"),
    ("risk refresh s (median of 3)", lambda m: f"{m.risk_s:.3f}"),
    ("streamed_positions rows", lambda m: f"{m.streamed_rows:,}"),
    ("queued_positions rows", lambda m: f"{m.queued_rows:,}"),
    ("Dagster event-log rows (batch runs)", lambda m: f"{m.event_rows:,}"),
    ("queued_contracts partitions", lambda m: f"{m.partitions:,}"),
)


def report(
    storage: str, start: Moment, end: Moment, written: dict[str, int], args: argparse.Namespace
) -> str:
    lines = [
        f"\n== {storage}: {args.contracts:,} queued contracts, {written['legs']} streamed legs, "
        f"{args.hours} h compressed ==",
        f"the day: {written['stream_rows']:,} streamed history rows in {written['stream_commits']} commits "
        f"(written directly as Delta appends, one row per leg per {args.tick_seconds:g} s), "
        f"{written['pushes']} portfolio pushes re-queueing every contract, {written['dagster_batches']} real "
        f"Dagster batch runs and {written['lake_batches']} batches done through the lake code only; the real "
        f"stream ran {args.stream_seconds:g} s against the simulator at both ends",
        f"{'':44} {'start':>14} {'end':>14}",
    ]
    lines += [f"{name:44} {fmt(start):>14} {fmt(end):>14}" for name, fmt in ROWS]
    if "first_lake_batch_ms" in written:
        first, last = written["first_lake_batch_ms"] / 1000, written["last_lake_batch_ms"] / 1000
        name = "lake work of a batch s (day's 1st/last)"
        lines.append(f"{name:44} {first:>14.2f} {last:>14.2f}")
    batch, sensor = _ratio(start.batch_s, end.batch_s), _ratio(start.sensor_s, end.sensor_s)
    read, risk = _ratio(start.read_ms, end.read_ms), _ratio(start.risk_s, end.risk_s)
    lines.append(f"flat: batch {batch:.2f}, sensor {sensor:.2f}, read {read:.2f}, risk {risk:.2f}")
    return "\n".join(lines)


def _ratio(start: float, end: float) -> float:
    return end / start if start else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storages", default="sqlite,postgres")
    parser.add_argument("--contracts", type=int, default=10_000)
    parser.add_argument("--legs", type=int, default=100)
    parser.add_argument("--book", type=int, default=300, help="positions in the simulator's account")
    parser.add_argument("--hours", type=float, default=6.5)
    parser.add_argument("--tick-seconds", type=float, default=1.0)
    parser.add_argument("--commit-minutes", type=float, default=30.0)
    parser.add_argument("--push-minutes", type=float, default=30.0)
    parser.add_argument("--dagster-batches", type=int, default=4)
    parser.add_argument("--stream-seconds", type=float, default=5.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("ib_async").setLevel(logging.CRITICAL)
    logging.getLogger("dagster").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    for storage in args.storages.split(","):
        if storage == "postgres":
            try:
                with start_postgres() as server:
                    print(report(storage, *bench_storage(storage, args, server), args), flush=True)
            except PostgresUnavailable as exc:
                print(f"\n== postgres: skipped ({exc})")
        else:
            print(report(storage, *bench_storage(storage, args, None), args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
