"""Model greeks for queued options, and the pacing of the historical requests that price their underlyings.

1. CPU: the simulator's generated book of N options (default 10,000; eight underlyings, four expiries), each
   row as the lake holds a queued position (its mark, no greeks, no underlying price); the underlying's
   price comes from historical closes. Timed: `with_underlying_prices` + `with_model_greeks` (process CPU
   time, median of several runs). Then the model's greeks against the simulator's own (its Black-Scholes at
   the true vol) for every leg marked >= $0.50 above its zero-vol floor: the error a user sees, clocks
   included (ours: expiry at 16:00 New York; the simulator: (days + 0.5) / 365).
2. Pacing: UnderlyingCloses asks the simulator (which enforces IB's historical-data rules and counts
   violations) for the close of every underlying, twice. (a) the demo book's 8 underlyings on the real
   clock; (b) a book of 200 underlyings on a simulated clock shared by the pacer and the gateway, so an
   hour of pacing runs in seconds. Printed: requests, the most in any 10 minutes (IB allows 60), the
   shortest gap between identical requests (IB: 15 s), and the violations the gateway counted.

Run: .venv/bin/python benchmarks/model_greeks_bench.py [--options 10000] [--runs 5] [--underlyings 200]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time
from datetime import UTC, datetime

import numpy as np
import polars as pl
from ib_async import IB

from v6_positions.ib.zero_line.underlying_bars import BarRequest, HistoricalPacer, UnderlyingCloses
from v6_positions.risk.model_greeks import price_bounds, with_model_greeks
from v6_positions.risk.underlying_prices import symbols_without_price, with_underlying_prices
from v6_positions.simulator import Book, SimulatorThread, Underlying, load_book
from v6_positions.simulator.market import Market
from v6_positions.simulator.pricing import RISK_FREE_RATE
from v6_positions.simulator.pricing import years_to_expiry as sim_years_to_expiry


def queued_rows(book: Book) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, float]]:
    """(the book as queued lake rows, the simulator's greeks per conid, the underlyings' prices)."""
    market = Market(book)
    rows, truth = [], []
    for (account, conid), held in book.positions.items():
        c = held.contract
        quote = market.quote(c)
        rows.append(
            {"account": account, "conid": conid, "symbol": c.symbol, "sec_type": c.sec_type, "right": c.right,
             "strike": c.strike, "expiry": c.expiry, "position": held.position, "market_price": quote.mark,
             "underlying_price": None, "delta": None, "gamma": None, "vega": None, "theta": None,
             "implied_vol": None, "event_time": datetime.now(UTC)}
        )  # fmt: skip
        if quote.greeks is not None:
            g = quote.greeks
            truth.append({"conid": conid, "sim_delta": g.delta, "sim_gamma": g.gamma, "sim_vega": g.vega,
                          "sim_theta": g.theta, "und": quote.und_price})  # fmt: skip
    schema = {
        name: pl.Float64 for name in ("underlying_price", "delta", "gamma", "vega", "theta", "implied_vol")
    }
    closes = {symbol: market.price(symbol) for symbol in book.underlyings}
    return pl.DataFrame(rows, schema_overrides=schema), pl.DataFrame(truth), closes


def bench_cpu(options: int, runs: int) -> None:
    book = load_book(f"generated:{options}")
    frame, truth, prices = queued_rows(book)
    closes = {symbol: prices[symbol] for symbol in symbols_without_price(frame)}  # nothing streams here
    print(f"\n## model greeks: {len(frame):,} queued options ({runs} runs)")
    print(f"{len(closes)} underlyings priced by a historical bar (no streamed leg, no stock)\n")
    samples, stages = [], []
    result = None
    for _ in range(runs):
        now = datetime.now(UTC)
        start = time.process_time()
        priced = with_underlying_prices(frame, closes)
        middle = time.process_time()
        result = with_model_greeks(priced, now=now, rate=RISK_FREE_RATE)
        end = time.process_time()
        samples.append(end - start)
        stages.append((middle - start, end - middle))
    assert result is not None
    print("| stage | median CPU s |\n|---|---|")
    print(f"| underlying prices | {statistics.median(s[0] for s in stages):.4f} |")
    print(f"| implied vol + greeks | {statistics.median(s[1] for s in stages):.4f} |")
    print(f"| total (budget 1.0) | {statistics.median(samples):.4f} (max {max(samples):.4f}) |")
    counts = {**dataclasses.asdict(result.counts), "missing": result.counts.missing}
    print("\ncounts: " + ", ".join(f"{name} {n:,}" for name, n in counts.items() if n))
    joined = result.frame.join(truth, on="conid").filter(pl.col("greeks_source") == "model")
    years = np.array([sim_years_to_expiry(e) for e in joined["expiry"]])
    floor, _ = price_bounds(joined["und"].to_numpy(), joined["strike"].to_numpy(), years,
                            (joined["right"] == "C").to_numpy(), RISK_FREE_RATE, RISK_FREE_RATE)  # fmt: skip
    priced_by_vol = joined.filter(pl.Series(joined["market_price"].to_numpy() - floor >= 0.5))
    errors = priced_by_vol.select(
        delta=(pl.col("delta") - pl.col("sim_delta")).abs(),
        gamma=((pl.col("gamma") - pl.col("sim_gamma")) / pl.col("sim_gamma")).abs(),
        vega=((pl.col("vega") - pl.col("sim_vega")) / pl.col("sim_vega")).abs(),
        theta=((pl.col("theta") - pl.col("sim_theta")) / pl.col("sim_theta")).abs(),
        theta_dollars=(pl.col("theta") - pl.col("sim_theta")).abs(),  # relative is large where theta ~ 0
    )
    others = len(joined) - len(errors)
    print(f"\nagainst the simulator's greeks, {len(errors):,} legs >= $0.50 above their zero-vol floor")
    print(f"({others:,} others: the mark's rounding, not the vol, sets their price)\n")
    print("| greek | error | p50 | p99 | max |\n|---|---|---|---|---|")
    for name, unit in (
        ("delta", "absolute"),
        ("gamma", "relative"),
        ("vega", "relative"),
        ("theta", "relative"),
        ("theta_dollars", "$/day/share"),
    ):
        col = errors[name]
        print(f"| {name} | {unit} | {col.quantile(0.5):.5f} | {col.quantile(0.99):.5f} | {col.max():.5f} |")


class SharedClock:
    """The pacer's and the gateway's clock; `sleep` moves it at once."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def _max_in_window(times: list[float], window: float) -> int:
    most, first = 0, 0
    for last, t in enumerate(times):
        while times[first] <= t - window:
            first += 1
        most = max(most, last - first + 1)
    return most


class LoggingPacer(HistoricalPacer):
    """HistoricalPacer that keeps (time, request) of every request it let out."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sent: list[tuple[float, BarRequest]] = []

    def record(self, request: BarRequest) -> None:
        self.sent.append((self.clock(), request))
        super().record(request)


async def _two_rounds(port: int, symbols: list[str], pacer: LoggingPacer, sleep) -> UnderlyingCloses:
    ib = IB()
    await ib.connectAsync("127.0.0.1", port, clientId=5, readonly=True, timeout=4)
    try:
        fetcher = UnderlyingCloses(ib, pacer, sleep=sleep)
        for _ in range(2):
            closes = await fetcher.fetch(symbols)
            assert len(closes) == len(symbols), closes
        return fetcher
    finally:
        ib.disconnect()


def _pacing_row(label: str, fetcher: UnderlyingCloses, elapsed: float, stats: dict) -> str:
    sent = fetcher.pacer.sent  # type: ignore[attr-defined]
    times = [t for t, _ in sent]
    gaps: dict[tuple, float] = {}
    last: dict[tuple, float] = {}
    for t, request in sent:
        if request.key in last:
            gaps[request.key] = min(gaps.get(request.key, float("inf")), t - last[request.key])
        last[request.key] = t
    shortest = min(gaps.values()) if gaps else float("nan")
    cells = [label, fetcher.stats.requested, fetcher.stats.answered, _max_in_window(times, 600.0),
             f"{shortest:.1f}", f"{elapsed / 60:.1f}", stats["historical_pacing_violations"]]  # fmt: skip
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def bench_pacing(underlyings: int) -> None:
    print("\n## historical closes, two rounds over every underlying")
    print("IB allows <= 60 requests per 10 minutes and no identical request within 15 s; the gateway counts")
    print("violations.\n")
    print("| run | requests | answered | most in 10 min | min identical gap s | minutes | violations |")
    print("|---|---|---|---|---|---|---|")
    with SimulatorThread(load_book("demo"), tick_interval=3600.0) as sim:
        start = time.monotonic()
        symbols = sorted(sim.book.underlyings)
        fetcher = asyncio.run(_two_rounds(sim.port, symbols, LoggingPacer(), asyncio.sleep))
        print(_pacing_row("demo, 8 underlyings, real clock", fetcher, time.monotonic() - start, sim.stats()))
    underlying = {f"U{i:03d}": Underlying(f"U{i:03d}", 50.0 + i, 0.3, 10_000 + i) for i in range(underlyings)}
    clock = SharedClock()
    with SimulatorThread(Book(accounts=["DU1"], underlyings=underlying), tick_interval=3600.0) as sim:
        assert sim.sim is not None
        sim.sim.historical.clock = clock  # the gateway judges pacing on the same simulated time
        start = time.monotonic()
        pacer = LoggingPacer(clock=clock)
        fetcher = asyncio.run(_two_rounds(sim.port, sorted(underlying), pacer, clock.sleep))
        wall = time.monotonic() - start
        print(_pacing_row(f"{underlyings} underlyings, simulated clock", fetcher, clock.now, sim.stats()))
    waited = fetcher.stats.waited_s / 60
    print(f"\n(simulated run: {wall:.1f} s of wall time; the pacer waited {waited:.1f} simulated minutes)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--options", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--underlyings", type=int, default=200)
    args = parser.parse_args()
    bench_cpu(args.options, args.runs)
    bench_pacing(args.underlyings)


if __name__ == "__main__":
    main()
