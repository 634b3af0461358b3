"""Dagster-layer benchmarks: figures to compare between changes (not a timed test).

For 100, 1,000 and 10,000 queued contracts: the queue_partitions sensor's tick (first tick, which turns
every queue key into a partition, and a steady tick with nothing new), the batch schedule's tick, and the wall
time of the batch runs it requests (queued_positions for the whole range + positions), on the queued-payload
path (zero streaming lines, no gateway needed). The zero-line fetch path (stream down: reqPositions +
reqPnLSingle against the gateway simulator) is measured too, up to --fetch-max contracts.

Each figure is taken on both instance storages, side by side: the embedded SQLite instance and
dagster-postgres on a throwaway PostgreSQL server this script starts (the tests' server, see
v6_positions_tests/postgres_server.py). On Postgres the event-write settings are measured without
(`default`) and with (`tuned`, what deploy/production/dagster.yaml's run containers get): EVENT_SETTINGS.

Run: .venv/bin/python benchmarks/dagster_bench.py [--sizes 100,1000,10000] [--fetch-max 1000]
     [--storages sqlite,postgres] [--events default,tuned]
Everything happens in temporary directories (and a temporary cluster) that are removed at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import dagster as dg

from v6_positions.config import Settings
from v6_positions.definitions import build_definitions
from v6_positions.defs.jobs import BATCH_JOB_NAME
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.tables import read_table
from v6_positions.simulator import SimulatorThread
from v6_positions.simulator.book import Book
from v6_positions.simulator.demo_books import generated_book

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from v6_positions_tests.postgres_server import PostgresServer, start_postgres  # noqa: E402

T = TypeVar("T")

BATCHED_SQLITE = {"module": "v6_positions.instance.sqlite_event_log", "class": "BatchedSqliteStorage"}

# Dagster reads these from the environment of the process that writes the events (the run worker):
# - DAGSTER_EVENT_BATCH_SIZE > 0 writes the per-partition materializations of a range run in batches
#   (store_event_batch: dagster-postgres inserts a batch in one multi-row INSERT and updates the asset row
#   once) instead of one INSERT + one asset-row UPDATE per partition, each on a fresh connection (the event
#   log's engine uses NullPool). Dagster's SQLite event log stores a batch one event at a time (two commits
#   each); on SQLite `tuned` also selects v6_positions.instance.sqlite_event_log (one commit per file per
#   batch).
# - DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS emits one "materialization planned" event per asset for
#   a range instead of one per partition; our batch runs log no per-partition planned events in 1.13.27
#   (measured: no effect), so it is not part of `tuned` (it would also stop failed runs' partitions from
#   being marked failed). `--events subset` measures it.
EVENT_SETTINGS: dict[str, dict[str, str]] = {
    "default": {},
    "tuned": {"DAGSTER_EVENT_BATCH_SIZE": "1000"},
    "subset": {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true"},
    "tuned10k": {"DAGSTER_EVENT_BATCH_SIZE": "10000"},
}


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
    # The context opens its own instance from the ref; `with` closes it again.
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime.now(UTC), resources=defs.resources
    ) as context:
        result = defs.resolve_schedule_def("queued_positions_batch").evaluate_tick(context)
    return list(result.run_requests or [])


def run_batches(
    defs: dg.Definitions, instance: dg.DagsterInstance, requests: list[dg.RunRequest], fetch: str
) -> None:
    job = defs.resolve_job_def(BATCH_JOB_NAME)
    config = {"ops": {"queued_positions": {"config": {"zero_line_fetch": fetch}}}}
    for request in requests:
        result = job.execute_in_process(instance=instance, tags=request.tags, run_config=config)
        assert result.success, "batch run failed"


def event_rows(instance: dg.DagsterInstance, run_ids: list[str]) -> int:
    return sum(len(instance.all_logs(run_id)) for run_id in run_ids)


def instance_storage(postgres: PostgresServer | None, events: str, home: str) -> dict[str, object] | None:
    """The `storage:` block of the instance: Postgres; SQLite as Dagster ships it (`default`), or with the
    batched event log deploy/local/dagster.yaml selects (any other event setting)."""
    if postgres is not None:
        return {"storage": postgres.dagster_storage()}
    if events == "default":
        return None
    return {"storage": {"custom": {**BATCHED_SQLITE, "config": {"base_dir": home}}}}


def bench_size(
    count: int, *, fetch: bool, postgres: PostgresServer | None = None, events: str = "default"
) -> dict[str, float]:
    book = generated_book(count) if fetch else None
    with ExitStack() as stack:
        lake_root = stack.enter_context(tempfile.TemporaryDirectory())
        home = stack.enter_context(tempfile.TemporaryDirectory())
        overrides = instance_storage(postgres, events, home)
        stack.enter_context(environment(EVENT_SETTINGS[events]))
        with dg.instance_for_test(overrides, temp_dir=home) as instance:
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
                before = {run.run_id for run in instance.get_runs()}
                _, batch_s = timed(
                    lambda: run_batches(defs, instance, requests, "always" if fetch else "never")
                )
                written = read_table(lake_root, "queued_positions").height
                assert written == queued and PositionQueue(lake_root).backlog().due == 0
                new_runs = [r.run_id for r in instance.get_runs() if r.run_id not in before]
                logged = event_rows(instance, new_runs)
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
        "events": logged,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument(
        "--fetch-max", type=int, default=1000, help="largest size for the zero-line fetch path"
    )
    parser.add_argument("--storages", default="sqlite,postgres")
    parser.add_argument(
        "--events", default="default,tuned", help=f"event settings: {sorted(EVENT_SETTINGS)}"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)  # dagster's DEBUG/INFO event lines would drown the figures
    sizes = [int(s) for s in args.sizes.split(",")]
    storages = args.storages.split(",")
    variants = [(storage, events) for storage in ("sqlite", "postgres") if storage in storages
                for events in args.events.split(",")]

    with ExitStack() as stack:
        postgres = stack.enter_context(start_postgres()) if "postgres" in storages else None
        for storage, events in variants:  # warm-up: first job resolution and imports are not the batch's cost
            bench_size(10, fetch=False, postgres=postgres if storage == "postgres" else None, events=events)
        header = (
            f"{'storage':<10}{'events':<9}{'path':<15}{'contracts':>9}{'sensor 1st':>12}{'add parts':>11}"
            f"{'sensor':>9}{'schedule':>10}{'runs':>6}{'batch wall':>12}{'contracts/s':>13}{'event rows':>12}"
        )
        print(header)
        print("-" * len(header))
        final: dict[str, float] = {}
        for fetch in (False, True):
            for count in sizes:
                if fetch and count > args.fetch_max:
                    continue
                for storage, events in variants:
                    server = postgres if storage == "postgres" else None
                    r = bench_size(count, fetch=fetch, postgres=server, events=events)
                    print(
                        f"{storage:<10}{events:<9}{'zero-line' if fetch else 'queued payload':<15}"
                        f"{r['contracts']:>9,}{r['sensor_first_s']:>11.3f}s{r['add_partitions_s']:>10.3f}s"
                        f"{r['sensor_steady_s']:>8.3f}s{r['schedule_s']:>9.3f}s{r['runs']:>6}"
                        f"{r['batch_s']:>11.2f}s{r['per_s']:>13,.0f}{r['events']:>12,}",
                        flush=True,
                    )
                    # The summary line: the queued-payload batch at 10,000 as deployed (tuned on Postgres).
                    if not fetch and count == 10_000 and events == "tuned":
                        final[storage] = r["batch_s"]
                    elif not fetch and count == 10_000 and storage not in final:
                        final[storage] = r["batch_s"]
    print("\nsensor 1st = tick that reads the queue and requests every new partition; sensor = steady tick;")
    print("batch wall = all runs the schedule requested, run in-process one after another (queued_positions")
    print("+ positions); event rows = Dagster event-log entries those runs wrote.")
    tuned = ", ".join(f"{name}={value}" for name, value in EVENT_SETTINGS["tuned"].items())
    print(f"events: default = Dagster's defaults; tuned = {tuned} (+ on SQLite: BatchedSqliteStorage).")
    print("For comparison: 50 contracts every 5 s is 10 contracts/s.\n")
    for storage, seconds in final.items():
        print(f"batch 10000 {storage}: {seconds:.2f} s")


if __name__ == "__main__":
    main()
