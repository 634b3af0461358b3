"""reqHistoricalData through the unmodified ib_async client: the day's bar, IB's refusals and its pacing."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools

from ib_async import Contract, Stock
from polling import wait_until
from sim_helpers import connected

from v6_positions.simulator import SimulatorThread, load_book
from v6_positions.simulator.historical import PACING_TEXT


def _still_sim(**kwargs) -> SimulatorThread:
    # The walk does not step (a tick every hour): the bar's close can be compared with other messages.
    return SimulatorThread(load_book("demo"), tick_interval=3600.0, **kwargs)


async def _bars(ib, contract, duration="1 D", bar_size="1 day", what="TRADES", end=""):
    return await ib.reqHistoricalDataAsync(contract, end, duration, bar_size, what, True, timeout=5)


def test_a_daily_bar_of_an_underlying_closes_at_the_price_its_options_carry() -> None:
    async def main(sim: SimulatorThread) -> None:
        async with connected(sim.port) as ib:
            bars = await _bars(ib, Stock("SPY", "SMART", "USD"))
            assert len(bars) == 1  # the simulated market's whole history is today
            bar = bars[0]
            assert bar.date == dt.datetime.now(dt.UTC).date()
            assert bar.open == 580.0  # the demo book's SPY starts its walk there
            assert bar.low <= min(bar.open, bar.close) and bar.high >= max(bar.open, bar.close)
            assert bar.volume > 0 and bar.barCount > 0 and bar.low <= bar.average <= bar.high
            spy_option = next(
                c for c in sim.book.contracts.values() if c.symbol == "SPY" and c.sec_type == "OPT"
            )
            ticker = ib.reqMktData(Contract(conId=spy_option.conid, exchange="SMART"))
            await wait_until(lambda: ticker.modelGreeks is not None)
            assert bar.close == round(ticker.modelGreeks.undPrice, 4)
            midpoint = await _bars(ib, Stock("QQQ", "SMART", "USD"), what="MIDPOINT")
            assert midpoint[0].volume == -1 and midpoint[0].close > 0  # quotes have no volume: IB's -1
        stats = sim.stats()
        assert stats["historical_served"] == 2 and stats["historical_pacing_violations"] == 0

    with _still_sim() as sim:
        asyncio.run(main(sim))


def test_requests_it_cannot_answer_are_refused_as_ib_refuses_them(sim) -> None:
    async def main() -> None:
        errors: list = []
        async with connected(sim.port, errors=errors) as ib:
            spy = Stock("SPY", "SMART", "USD")
            option = next(c for c in sim.book.contracts.values() if c.sec_type == "OPT")
            assert len(await _bars(ib, Stock("NOPE", "SMART", "USD"))) == 0
            assert len(await _bars(ib, Contract(conId=option.conid, exchange="SMART"))) == 0
            assert len(await _bars(ib, spy, bar_size="1 min")) == 0
            assert len(await _bars(ib, spy, duration="2 D", end="20200102 16:00:00 UTC")) == 0
        codes = [code for _, code, _ in errors if code in (162, 200)]
        assert codes == [200, 162, 162, 162]
        texts = [msg for _, code, msg in errors if code == 162]
        assert "HMDS query returned no data" in texts[0] and "'1 day' bars only" in texts[1]
        assert "no history before today" in texts[2]
        assert sim.stats()["historical_served"] == 0

    asyncio.run(main())


def test_an_identical_request_within_15_s_is_a_pacing_violation(sim) -> None:
    async def main() -> None:
        errors: list = []
        async with connected(sim.port, errors=errors) as ib:
            spy = Stock("SPY", "SMART", "USD")
            assert len(await _bars(ib, spy)) == 1
            assert len(await _bars(ib, spy)) == 0  # IB answers 162; ib_async ends the request empty
            assert len(await _bars(ib, spy, duration="2 D")) == 1  # not identical: another duration
        assert [msg for _, code, msg in errors if code == 162] == [
            f"Historical Market Data Service error message:{PACING_TEXT}"
        ]
        assert sim.stats()["historical_pacing_violations"] == 1

    asyncio.run(main())


def test_more_than_60_requests_in_10_minutes_or_6_on_one_contract_in_2_s_violate_pacing() -> None:
    now = [1000.0]  # the gateway's clock, moved by the test

    async def main(sim: SimulatorThread) -> None:
        errors: list = []
        async with connected(sim.port, errors=errors) as ib:
            symbols = list(sim.book.underlyings)
            for i in range(60):  # 2.1 s apart: only the 60-per-10-minutes rule can bite
                now[0] += 2.1
                bars = await _bars(
                    ib, Stock(symbols[i % len(symbols)], "SMART", "USD"), duration=f"{i + 1} D"
                )
                assert len(bars) == 1, i
            assert len(await _bars(ib, Stock("SPY", "SMART", "USD"), duration="99 D")) == 0
            now[0] = 1000.0 + 2.1 + 600.5  # the first request (only) has left the window
            assert len(await _bars(ib, Stock("SPY", "SMART", "USD"), duration="99 D")) == 1
            now[0] += 601.0
            durations = (f"{d} D" for d in itertools.count(200))
            for _ in range(5):
                assert len(await _bars(ib, Stock("IWM", "SMART", "USD"), duration=next(durations))) == 1
            sixth = await _bars(ib, Stock("IWM", "SMART", "USD"), duration=next(durations))
            assert len(sixth) == 0
            assert len(await _bars(ib, Stock("QQQ", "SMART", "USD"), duration=next(durations))) == 1
        assert sum(1 for _, code, _ in errors if code == 162) == 2
        assert sim.stats()["historical_pacing_violations"] == 2

    with _still_sim() as sim:
        assert sim.sim is not None
        sim.sim.historical.clock = lambda: now[0]
        asyncio.run(main(sim))
