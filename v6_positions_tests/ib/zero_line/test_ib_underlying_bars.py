"""Underlying prices from reqHistoricalData: the pacer keeps IB's rules, the fetcher reads one bar per
underlying from the simulator over TCP, and the simulator (enforcing IB's rules) sees no violation."""

from __future__ import annotations

import asyncio
import time

import pytest
from ib_async import IB

from v6_positions.config import Settings
from v6_positions.ib.zero_line.underlying_bars import (
    BarRequest,
    HistoricalPacer,
    UnderlyingCloses,
    fetch_closes_zero_line,
)
from v6_positions.simulator import SimulatorThread, load_book


class FakeClock:
    """One clock for the pacer and the gateway: `sleep` moves it at once, so minutes of pacing take none."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_pacer_waits_out_identical_same_contract_and_per_10_minute_rules() -> None:
    clock = FakeClock()
    pacer = HistoricalPacer(clock=clock, margin_s=0.5)
    spy = BarRequest("SPY")
    assert pacer.delay(spy) == 0.0
    pacer.record(spy)
    assert pacer.delay(spy) == pytest.approx(15.5)  # identical within 15 s
    assert pacer.delay(BarRequest("QQQ")) == 0.0
    for days in range(2, 6):  # SPY 5 times within 2 s: the 6th must wait
        pacer.record(BarRequest("SPY", duration=f"{days} D"))
    assert pacer.delay(BarRequest("SPY", duration="9 D")) == pytest.approx(2.5)
    clock.now += 20.0
    for i in range(55):  # 60 in the window now
        pacer.record(BarRequest(f"S{i}"))
    assert pacer.most_in_window == 60
    assert pacer.delay(BarRequest("NEW")) == pytest.approx(600.5 - 20.0)  # until the first one leaves
    with pytest.raises(ValueError, match="window_max=61"):
        HistoricalPacer(window_max=61)


def test_closes_of_every_underlying_one_bar_each_paced_so_the_gateway_refuses_none() -> None:
    clock = FakeClock()

    async def main(sim: SimulatorThread) -> None:
        ib = IB()
        await ib.connectAsync("127.0.0.1", sim.port, clientId=5, readonly=True, timeout=4)
        try:
            fetcher = UnderlyingCloses(ib, HistoricalPacer(clock=clock), sleep=clock.sleep)
            symbols = sorted(sim.book.underlyings)
            first = await fetcher.fetch(symbols)
            assert sorted(first) == symbols
            for symbol, close in first.items():  # the walk does not step: the close is the start price
                assert close == sim.book.underlyings[symbol].price
            again = await fetcher.fetch([*symbols, "NOPE"])  # identical requests: the pacer waits 16 s
            assert again == first
            assert fetcher.stats.requested == 2 * len(symbols) + 1
            assert fetcher.stats.answered == 2 * len(symbols) and fetcher.stats.missing == 1
            assert fetcher.stats.errors == {200: 1}  # NOPE: no security definition, no price invented
            assert fetcher.stats.waited_s >= 15.0
        finally:
            ib.disconnect()

    with SimulatorThread(load_book("demo"), tick_interval=3600.0) as sim:
        assert sim.sim is not None
        sim.sim.historical.clock = clock  # the gateway judges pacing on the same (fake) time
        asyncio.run(main(sim))
        stats = sim.stats()
        assert stats["historical_requests"] == 2 * len(sim.book.underlyings) + 1
        assert stats["historical_pacing_violations"] == 0


def test_a_scheduled_fetch_keeps_pacing_across_processes_and_never_blocks() -> None:
    """What a run on a schedule does: restore the request history an earlier run kept (wall clock), send
    what may go out now, defer the rest to its next run."""
    with SimulatorThread(load_book("demo"), tick_interval=3600.0) as sim:
        earlier = HistoricalPacer(clock=time.time)
        earlier.record(BarRequest("SPY"))  # an earlier run asked for SPY a moment ago
        pacer = HistoricalPacer(clock=time.time)
        pacer.restore(earlier.history())
        settings = Settings(ib_port=sim.port, ib_client_id=10)
        closes, stats = fetch_closes_zero_line(settings, 11, ["SPY", "QQQ"], pacer, max_wait_s=0.0)
        assert closes == {"QQQ": sim.book.underlyings["QQQ"].price}
        assert stats.deferred == 1 and stats.requested == 1 and stats.answered == 1
        assert [request.symbol for _, request in pacer.history()] == ["SPY", "QQQ"]
        assert sim.stats()["historical_requests"] == 1
        assert sim.stats()["historical_pacing_violations"] == 0
