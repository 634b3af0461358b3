"""Risk refresh at 10,000 positions: is it <= 1 s, and flat over a trading day? (figures, not a timed test)

On real Delta tables in a temp dir: a book of `--positions` option positions (the first `--legs` of them the
legs of iron condors, streamed with IB's greeks; the rest queued, valued without greeks) plus a few stocks.
Measured: one risk refresh (what the `strategy_risk` / `underlying_risk` assets run: read `positions` and
the registry, position risk, strategy and underlying rows, snapshot overwrite + history append of both).

The day: `--minutes` refreshes, one per simulated minute, each after a stream flush of the legs merged into
`positions`; every `--batch-minutes` a batch of every queued contract is merged too. Then the same
measurement at the end of the day. Prints both moments and `flat: refresh x.xx, compute x.xx` (end / start).

The day runs compressed (a simulated minute takes a fraction of a second), but what keeps the tables small
is measured in wall-clock time: the log and the replaced files a table keeps (its retention properties,
15 minutes for the snapshots and the book, an hour for histories). So the bench scales those durations by
the compression it measures over the first minutes, as the real clock would expire them; without that, a
compressed day keeps a whole day of replaced files and log entries that a real one has long dropped.

Run: .venv/bin/python benchmarks/risk_bench.py [--positions 10000] [--legs 100] [--minutes 390]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta

import polars as pl
from deltalake import DeltaTable

from v6_positions.lake.history import write_rows
from v6_positions.lake.positions import read_positions
from v6_positions.lake.registry import StrategyRegistry
from v6_positions.lake.rows import PositionRow
from v6_positions.lake.tables import read_table
from v6_positions.risk.refresh import compute_risk, refresh_risk

SYMBOLS = ("SPY", "QQQ", "IWM", "AAPL", "MSFT", "NVDA", "TSLA", "AMZN")
SPOTS = dict(zip(SYMBOLS, (580.0, 500.0, 220.0, 230.0, 420.0, 135.0, 250.0, 200.0), strict=True))
SAMPLES = 5
WARMUP_MINUTES = 10  # the compression (bench seconds per day minute) is measured over these


def option_row(i: int, at: datetime, streamed: bool, drift: float = 0.0) -> PositionRow:
    symbol = SYMBOLS[i % len(SYMBOLS)]
    spot = SPOTS[symbol] * (1 + drift)
    right = "C" if i % 2 else "P"
    size = (-1.0, 1.0, -2.0, 3.0)[i % 4]
    price = 1.0 + (i % 50) / 10
    row = PositionRow(account="DU1", conid=920000000 + i, symbol=symbol, right=right,
                      strike=round(spot * (0.9 + (i % 20) / 100)), expiry="20271217", position=size,
                      market_price=price, market_value=price * size * 100, average_cost=price * 90,
                      unrealized_pnl=price * size * 10, multiplier=100.0, event_time=at,
                      source="stream" if streamed else "batch",
                      daily_pnl=None if streamed else 5.0)  # fmt: skip
    if streamed:
        row.delta, row.gamma, row.vega, row.theta = (0.3 if right == "C" else -0.3), 0.01, 0.4, -0.05
        row.underlying_price, row.prior_close = spot, price * 0.95
        row.daily_pnl = (price - row.prior_close) * size * 100
    return row


def stock_rows(at: datetime) -> list[PositionRow]:
    return [
        PositionRow(
            account="DU1",
            conid=1000 + i,
            symbol=s,
            sec_type="STK",
            position=100.0,
            market_price=SPOTS[s],
            market_value=SPOTS[s] * 100,
            source="batch",
            event_time=at,
        )  # fmt: skip
        for i, s in enumerate(SYMBOLS[:4])
    ]


def scale_retention(root: str, seconds_per_minute: float) -> None:
    """Each table's retention durations (in day minutes) as the bench's seconds."""
    for name in ("positions", "strategy_risk", "underlying_risk", "strategy_risk_history",
                 "underlying_risk_history"):  # fmt: skip
        table = DeltaTable(f"{root}/{name}")
        scaled = {}
        for key in ("delta.deletedFileRetentionDuration", "delta.logRetentionDuration"):
            amount, unit = table.metadata().configuration[key].split()[1:]
            minutes = float(amount) * (60 if unit.startswith("hour") else 1)
            scaled[key] = f"interval {max(1, round(minutes * seconds_per_minute))} seconds"
        table.alter.set_table_properties(scaled)


def measure(root: str) -> dict[str, float]:
    refresh = []
    compute = []
    for _ in range(SAMPLES):
        started = time.perf_counter()
        refresh_risk(root, 300.0)
        refresh.append(time.perf_counter() - started)
        book, registry = read_positions(root), StrategyRegistry(root).all_legs()
        started = time.perf_counter()
        compute_risk(book, registry, datetime.now(UTC), 300.0)
        compute.append(time.perf_counter() - started)
    return {
        "refresh_s": statistics.median(refresh),
        "compute_s": statistics.median(compute),
        "positions": float(read_positions(root).height),
        "history_rows": float(
            read_table(root, "underlying_risk_history").height
            + read_table(root, "strategy_risk_history").height
        ),  # fmt: skip
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=10_000)
    parser.add_argument("--legs", type=int, default=100)
    parser.add_argument("--minutes", type=int, default=390, help="refreshes in the day (6.5 h)")
    parser.add_argument("--batch-minutes", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        start = datetime.now(UTC) - timedelta(minutes=args.minutes)
        registry = StrategyRegistry(root)
        legs = [option_row(i, start, True) for i in range(args.legs)]
        for i, leg in enumerate(legs):
            registry.add_active(leg.conid, leg.symbol, leg.right, leg.strike, leg.expiry, i // 4)
        queued = [option_row(i, start, False) for i in range(args.legs, args.positions)]
        write_rows(root, "streamed_positions", legs)
        write_rows(root, "queued_positions", queued + stock_rows(start))
        before = measure(root)
        day_started = time.perf_counter()
        for minute in range(1, args.minutes + 1):
            if minute == WARMUP_MINUTES + 1:
                scale_retention(root, (time.perf_counter() - day_started) / WARMUP_MINUTES)
            at = start + timedelta(minutes=minute)
            write_rows(
                root, "streamed_positions", [option_row(i, at, True, minute / 1e4) for i in range(args.legs)]
            )
            if minute % args.batch_minutes == 0:
                write_rows(root, "queued_positions",
                           [option_row(i, at, False) for i in range(args.legs, args.positions)])  # fmt: skip
            refresh_risk(root, 300.0, now=at)
        day_s = time.perf_counter() - day_started
        after = measure(root)
    print(f"risk refresh, {args.positions:,} positions ({args.legs} streamed legs in {args.legs // 4} "
          f"strategies), {args.minutes} refreshes in between (simulated day: {day_s:.0f} s)")  # fmt: skip
    print(f"{'':24}{'start of day':>14}{'end of day':>14}")
    for name in ("refresh_s", "compute_s", "positions", "history_rows"):
        print(f"{name:24}{before[name]:>14,.3f}{after[name]:>14,.3f}")
    frame = pl.DataFrame([before, after])
    ratio = frame.row(1, named=True)
    first = frame.row(0, named=True)
    print(
        f"flat: refresh {ratio['refresh_s'] / first['refresh_s']:.2f}, "
        f"compute {ratio['compute_s'] / first['compute_s']:.2f}"
    )


if __name__ == "__main__":
    main()
