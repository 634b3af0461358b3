"""Dagster-layer benchmarks: figures to compare between changes (not a timed test).

For 100, 1,000 and 10,000 queued contracts: the supervisor sensor's tick (first tick, which turns every queue
key into a partition, and a steady tick with nothing new), the batch schedule's tick, and the wall time of
the batch runs it requests (queued_positions for the whole range + positions), on the queued-payload path
(zero streaming lines, no gateway needed). The zero-line fetch path (stream down: reqPositions +
reqPnLSingle against the gateway simulator) is measured too, up to --fetch-max contracts.

Run: .venv/bin/python benchmarks/dagster_bench.py [--sizes 100,1000,10000] [--fetch-max 1000]
Everything happens in temporary directories that are removed at the end.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import dagster as dg

from v6_positions.config import Settings
from v6_positions.definitions import build_definitions
from v6_positions.defs.jobs import BATCH_JOB_NAME
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.tables import read_table
from v6_positions.simulator import SimulatorThread
from v6_positions.simulator.book import Book, generated_book

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def queue_rows(book: Book | None, count: int, *, with_payload: bool) -> list[dict[str, object]]:
    """Queue rows for the book's positions, or `count` synthetic option contracts when there is no book
    (the simulator's generated books top out at a few thousand distinct contracts)."""
    now = datetime.now(UTC)
    if book is not None:
        contracts = [
            (p.account, p.contract.conid, p.contract.symbol, p.contract.right, p.contract.strike,
             p.contract.expiry, p.position, p.avg_cost)
            for p in book.positions.values()
        ]  # fmt: skip
    else:
        symbols = ("SPY", "QQQ", "IWM", "AAPL", "MSFT", "NVDA", "TSLA", "AMZN")
        contracts = [
            (
                "DU1000001",
                930_000_000 + i,
                symbols[i % 8],
                "CP"[i % 2],
                100.0 + i // 16,
                "20261218",
                1.0,
                250.0,
            )
            for i in range(count)
        ]
    return [
        {
            "account": account, "conid": conid, "symbol": symbol, "right": right, "strike": strike,
            "expiry": expiry, "position": position if with_payload else None,
            "average_cost": avg_cost if with_payload else None, "payload_time": now if with_payload else None,
        }
        for account, conid, symbol, right, strike, expiry, position, avg_cost in contracts
    ]  # fmt: skip


def sensor_tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources)
    return defs.resolve_sensor_def("queue_partitions")(context)


def schedule_tick(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime.now(UTC), resources=defs.resources
    )
    return list(defs.resolve_schedule_def("queued_positions_batch").evaluate_tick(context).run_requests or [])


def run_batches(
    defs: dg.Definitions, instance: dg.DagsterInstance, requests: list[dg.RunRequest], fetch: str
) -> None:
    job = defs.resolve_job_def(BATCH_JOB_NAME)
    config = {"ops": {"queued_positions": {"config": {"zero_line_fetch": fetch}}}}
    for request in requests:
        result = job.execute_in_process(instance=instance, tags=request.tags, run_config=config)
        assert result.success, "batch run failed"


def bench_size(count: int, *, fetch: bool) -> dict[str, float]:
    book = generated_book(count) if fetch else None
    with tempfile.TemporaryDirectory() as lake_root, tempfile.TemporaryDirectory() as home:
        with dg.instance_for_test(temp_dir=home) as instance:
            port = 4002
            sim = SimulatorThread(book, portfolio_interval=3600.0) if book is not None else None
            if sim is not None:
                sim.start()
                port = sim.port
            try:
                defs = build_definitions(Settings(lake_uri=lake_root, ib_port=port))
                queued = PositionQueue(lake_root).insert_many(queue_rows(book, count, with_payload=not fetch))
                first, first_s = timed(lambda: sensor_tick(defs, instance, None))
                for request in first.dynamic_partitions_requests or []:
                    _, add_s = timed(
                        lambda r=request: instance.add_dynamic_partitions(
                            r.partitions_def_name, r.partition_keys
                        )
                    )
                _, steady_s = timed(lambda: sensor_tick(defs, instance, first.cursor))
                requests, schedule_s = timed(lambda: schedule_tick(defs, instance))
                _, batch_s = timed(
                    lambda: run_batches(defs, instance, requests, "always" if fetch else "never")
                )
                written = read_table(lake_root, "queued_positions").height
                assert written == queued and PositionQueue(lake_root).pending_count() == 0
            finally:
                if sim is not None:
                    sim.stop()
    return {
        "contracts": queued,
        "sensor_first_s": first_s,
        "add_partitions_s": add_s,
        "sensor_steady_s": steady_s,
        "schedule_s": schedule_s,
        "runs": len(requests),
        "batch_s": batch_s,
        "per_s": queued / batch_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument(
        "--fetch-max", type=int, default=1000, help="largest size for the zero-line fetch path"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)  # dagster's DEBUG/INFO event lines would drown the figures
    sizes = [int(s) for s in args.sizes.split(",")]

    bench_size(10, fetch=False)  # warm-up: first job resolution and imports are not the batch path's cost
    header = (
        f"{'path':<14}{'contracts':>10}{'sensor 1st':>12}{'add parts':>11}{'sensor':>9}"
        f"{'schedule':>10}{'runs':>6}{'batch wall':>12}{'contracts/s':>13}"
    )
    print(header)
    print("-" * len(header))
    for fetch in (False, True):
        for count in sizes:
            if fetch and count > args.fetch_max:
                continue
            r = bench_size(count, fetch=fetch)
            print(
                f"{'zero-line' if fetch else 'queued payload':<14}{r['contracts']:>10,}"
                f"{r['sensor_first_s']:>11.3f}s{r['add_partitions_s']:>10.3f}s{r['sensor_steady_s']:>8.3f}s"
                f"{r['schedule_s']:>9.3f}s{r['runs']:>6}{r['batch_s']:>11.2f}s{r['per_s']:>13,.0f}"
            )
    print("\nsensor 1st = tick that reads the queue and requests every new partition; sensor = steady tick;")
    print("batch wall = all runs the schedule requested, run in-process one after another (queued_positions")
    print("+ positions). Seed plan: 50 contracts every 5 s = 10 contracts/s.")


if __name__ == "__main__":
    main()
