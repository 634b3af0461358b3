"""Soak: the whole system under churn and faults, then the book checked against the gateway.

Run: .venv/bin/python benchmarks/soak_bench.py [--minutes M] [--seeds 7,8] [--quiet-timeout S]
Each seed: the demo book behind the simulator with a bot holding 92 of its 100 lines (12 active legs: they
stream, rotate and queue); the stream job in its own process on a temporary Dagster instance (batched SQLite
storage, as `make demo`); supervisor, queue sensor, batch schedule and reconciliation ticked as the daemon
would; churn for M minutes (positions opened, resized, closed, new contracts, registry flips, a gateway
restart, a 1101); then a quiet period until the book equals the simulator's positions (or the timeout).
Prints the three counts that must be 0 (missing, wrong size, closed shown open) per seed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import dagster as dg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "v6_positions_tests"))
from soak import SoakDriver  # noqa: E402  (the tests' folder is on sys.path)

from v6_positions.instance.sqlite_event_log import EVENT_BATCH_ENV  # noqa: E402
from v6_positions.simulator import SimulatorThread, load_book  # noqa: E402

LOCAL_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "local" / "dagster.yaml"


def soak(seed: int, churn_s: float, quiet_timeout_s: float, reconcile_every: int) -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        home, lake = Path(tmp) / "dagster_home", Path(tmp) / "lake"
        home.mkdir()
        lake.mkdir()
        storage = dict(yaml.safe_load(LOCAL_CONFIG.read_text())["storage"]["custom"])
        storage["config"] = {"base_dir": str(home)}
        with (
            dg.instance_for_test({"storage": {"custom": storage}}, temp_dir=str(home)) as instance,
            SimulatorThread(load_book("demo"), portfolio_interval=2.0) as sim,
        ):
            started = time.perf_counter()
            driver = SoakDriver(sim, instance, str(lake), seed=seed)
            report = driver.run(churn_s, quiet_timeout_s, reconcile_every=reconcile_every)
            wall = time.perf_counter() - started
    final = report.final
    assert final is not None
    converged = "-" if report.converged_after_s is None else f"{report.converged_after_s:.1f} s"
    events = ", ".join(f"{kind} {n}" for kind, n in sorted(report.events.items()))
    stats = report.sim_stats
    dagster = (
        f"{report.batch_runs} batch runs ({report.batch_failures} failed), "
        f"{report.reconciliations} reconciliations, {report.stream_runs} stream run(s)"
    )
    found = f"{dict(report.reconcile_found)}; repairs {report.reconcile_repairs}"
    gateway = (
        f"peak lines {stats['max_lines_in_use']} (bot 92), errors {stats['errors']}, "
        f"orders {stats['orders_received']}"
    )
    return [
        ("churn", f"{report.churn_s:.0f} s: {events}"),
        ("Dagster", dagster),
        ("reconciliation found (during churn)", found),
        ("gateway", gateway),
        ("book == gateway after quiet", f"{final.equal} (after {converged}; wall {wall:.0f} s)"),
        ("IB positions / book rows", f"{final.ib_positions} / {final.book_rows}"),
        ("missing", str(len(final.missing))),
        ("wrong size", str(len(final.wrong_size))),
        ("closed shown open", str(len(final.closed_shown_open))),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seeds", default="7")
    parser.add_argument("--quiet-timeout", type=float, default=180.0)
    parser.add_argument(
        "--no-reconcile", action="store_true",
        help="no scheduled reconciliation: does the pipeline alone keep the book true?",
    )  # fmt: skip
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    for name in ("ib_async", "v6_positions", "dagster"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ.update(EVENT_BATCH_ENV)  # what `v6-positions demo` sets for its run workers
    equal = True
    for seed in (int(s) for s in args.seeds.split(",")):
        reconcile = "no scheduled reconciliation" if args.no_reconcile else "reconciliation every 4th tick"
        print(f"== soak seed {seed}: {args.minutes:g} min of churn, {reconcile} ==")
        for name, value in soak(seed, args.minutes * 60, args.quiet_timeout, 0 if args.no_reconcile else 4):
            print(f"{name:<38} {value}")
            equal &= not (name in ("missing", "wrong size", "closed shown open") and value != "0")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
