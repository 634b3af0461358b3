"""Reconciling the book against IB's position list: wall time and market-data lines at 10,000 positions.

Run: .venv/bin/python benchmarks/reconcile_bench.py [--positions N]
A simulator holds N positions (generated book); the lake's book holds the same N, then drifts (1% of rows
lost, 1% resized, 1% ghosts). Timed: IB's list on a helper clientId (connect + reqPositions), the heal from
history, the comparison and the repair; and the same against an unchanged book. Lines are the simulator's
own count (peak lines in use while it ran).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from deltalake import DeltaTable

from v6_positions.config import Settings
from v6_positions.ib.account.position_list import broker_positions
from v6_positions.ib.zero_line.position_fetch import fetch_position_list
from v6_positions.lake.book_heal import heal_book
from v6_positions.lake.history import write_rows
from v6_positions.lake.positions import apply_to_positions
from v6_positions.lake.reconcile import reconcile_book
from v6_positions.lake.rows import PositionRow
from v6_positions.simulator import SimulatorThread, load_book


def _book_rows(book, when: datetime) -> list[PositionRow]:
    return [
        PositionRow(account=account, conid=conid, symbol=p.contract.symbol, sec_type=p.contract.sec_type,
                    position=p.position, source="batch", event_time=when)
        for (account, conid), p in book.positions.items() if p.position
    ]  # fmt: skip


def run(positions: int) -> list[tuple[str, str]]:
    results: list[tuple[str, str]] = []
    book = load_book(f"generated:{positions}")
    with tempfile.TemporaryDirectory() as lake, SimulatorThread(book) as sim:
        settings = Settings(lake_uri=lake, ib_port=sim.port)
        rows = _book_rows(sim.book, datetime.now(UTC) - timedelta(minutes=5))
        write_rows(lake, "queued_positions", rows)
        heal_book(lake)
        step = max(1, len(rows) // (len(rows) // 100 or 1))
        table = DeltaTable(f"{lake}/positions")
        lost = [r.conid for r in rows[::step]]
        table.delete(f"conid IN ({', '.join(map(str, lost))})")
        resized = [r.conid for r in rows[1::step]]
        resized_in = ", ".join(map(str, resized))
        table.update(updates={"position": "position + 1"}, predicate=f"conid IN ({resized_in})")
        ghosts = [replace(r, conid=10_000_000 + i) for i, r in enumerate(rows[2::step])]
        apply_to_positions(lake, ghosts)
        sim.reset_stats()

        for label in ("drifted book (1% lost, 1% resized, 1% ghosts)", "the book after repair and a batch"):
            started = time.perf_counter()
            answer = fetch_position_list(settings, settings.ib_client_id + 2)
            fetched = time.perf_counter() - started
            broker = broker_positions(answer)
            outcome = reconcile_book(lake, broker)
            total = time.perf_counter() - started
            # What the batch then writes for the re-queued contracts (IB's size, now).
            requeued = [broker.held[(d.account, d.conid)] for d in outcome.differences if d.kind != "ghost"]
            write_rows(lake, "queued_positions", [
                item.observation(datetime.now(UTC), item.position or 0.0, "batch") for item in requeued
            ])  # fmt: skip
            results.append((
                f"{label}: {len(answer.held):,} IB positions",
                f"{total:.2f} s (IB's list {fetched:.2f} s); {outcome.summary()}; "
                f"closes {outcome.closes_written}, re-queued {outcome.requeued}",
            ))  # fmt: skip
        results.append(("market-data lines used (simulator's peak)", str(sim.stats()["max_lines_in_use"])))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=10_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for logger in ("ib_async", "v6_positions"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    width = 60
    print(f"== reconcile: {args.positions:,} positions ==")
    for name, value in run(args.positions):
        print(f"{name:<{width}} {value}")


if __name__ == "__main__":
    main()
