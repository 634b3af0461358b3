"""Market data through the real ib_async client: lines across clients, 101, cancel, snapshots, qualify."""

from __future__ import annotations

import asyncio
import math

import pytest
from ib_async import Contract
from polling import wait_until
from sim_helpers import connect_ib, connected, option_contracts

from v6_positions.simulator import GatewaySimulator, SimulatorThread, demo_strategy_legs, load_book
from v6_positions.simulator.market import Market
from v6_positions.simulator.pricing import RISK_FREE_RATE, black_scholes, years_to_expiry


def test_100_streams_tick_and_the_101st_gets_error_101_and_no_data(sim) -> None:
    async def main() -> None:
        errors: list = []
        async with connected(sim.port, errors=errors) as ib:
            contracts = option_contracts(sim.book, 101)
            tickers = [ib.reqMktData(c) for c in contracts]  # ib_async paces these at 45/s
            await wait_until(lambda: any(code == 101 for _, code, _ in errors), timeout=10)
            streamed, refused = tickers[:100], tickers[100]
            await wait_until(lambda: all(t.bid > 0 and t.modelGreeks for t in streamed), timeout=5)
            updated: set[int] = set()  # every stream keeps ticking; the refused one never does
            ib.pendingTickersEvent += lambda tickers: updated.update(t.contract.conId for t in tickers)
            await wait_until(lambda: len(updated) >= 100)
            assert contracts[100].conId not in updated
            assert refused.bid != refused.bid and refused.modelGreeks is None  # NaN: never got a tick
            assert [msg for _, code, msg in errors if code == 101] == [
                "Max number of tickers has been reached."
            ]
            stats = sim.stats()
            assert stats["lines_in_use"] == 100 and stats["max_lines_in_use"] == 100
            assert stats["errors"]["101"] == 1
            assert stats["clients"][0]["lines"] == 100
            greeks = streamed[0].modelGreeks
            assert -1 <= greeks.delta <= 1 and greeks.gamma > 0 and greeks.vega > 0 and greeks.theta < 0
            assert greeks.undPrice > 0 and greeks.impliedVol > 0
            # cancel frees the line for the refused contract
            ib.cancelMktData(contracts[0])
            await wait_until(lambda: sim.stats()["lines_in_use"] == 99)
            again = ib.reqMktData(contracts[100])
            await wait_until(lambda: again.bid > 0)
            assert sim.stats()["lines_in_use"] == 100
        await wait_until(lambda: sim.stats()["lines_in_use"] == 0)  # freed on disconnect

    asyncio.run(main())


def test_lines_are_counted_across_clients() -> None:
    async def main(running) -> None:
        errors_b: list = []
        a = await connect_ib(running.port, client_id=1)
        b = await connect_ib(running.port, client_id=2, errors=errors_b)
        try:
            contracts = option_contracts(running.book, 4)
            for c in contracts[:3]:
                a.reqMktData(c)
            await wait_until(lambda: running.stats()["lines_in_use"] == 3)
            b.reqMktData(contracts[3])
            await wait_until(lambda: any(code == 101 for _, code, _ in errors_b))
            clients = {c["client_id"]: c["lines"] for c in running.stats()["clients"]}
            assert clients == {1: 3, 2: 0}
        finally:
            a.disconnect()
            b.disconnect()

    with SimulatorThread(load_book("demo"), max_lines=3) as running:
        asyncio.run(main(running))


def test_snapshot_ends_and_frees_its_line(sim) -> None:
    async def main() -> None:
        async with connected(sim.port) as ib:
            leg = demo_strategy_legs(sim.book)[0]
            tickers = await asyncio.wait_for(
                ib.reqTickersAsync(Contract(conId=leg.conid, exchange="SMART")), 3
            )
            assert tickers[0].bid > 0 and tickers[0].ask >= tickers[0].bid
            await wait_until(lambda: sim.stats()["lines_in_use"] == 0)
            assert sim.stats()["snapshot_count"] == 1

    asyncio.run(main())


def test_qualify_known_contracts_and_unknown_gets_200(sim) -> None:
    async def main() -> None:
        errors: list = []
        async with connected(sim.port, errors=errors) as ib:
            leg = demo_strategy_legs(sim.book)[5]
            by_fields = Contract(
                secType="OPT",
                symbol=leg.symbol,
                lastTradeDateOrContractMonth=leg.expiry,
                strike=leg.strike,
                right=leg.right,
                exchange="SMART",
                currency="USD",
            )
            stock = Contract(secType="STK", symbol="AAPL", exchange="SMART", currency="USD")
            unknown = Contract(
                secType="OPT",
                symbol="SPY",
                lastTradeDateOrContractMonth=leg.expiry,
                strike=1.5,
                right="C",
                exchange="SMART",
            )
            result = await ib.qualifyContractsAsync(by_fields, stock, unknown)
            assert result[0] is not None and result[0].conId == leg.conid
            assert result[0].multiplier == "100" and result[0].localSymbol.startswith(leg.symbol)
            assert result[1] is not None and result[1].conId == 265598
            assert result[2] is None
            assert [code for _, code, _ in errors if code < 2000] == [200]
            details = await ib.reqContractDetailsAsync(Contract(conId=leg.conid))
            assert details[0].underConId == sim.book.underlyings[leg.symbol].conid
            # market data for an unknown conid is refused with 200 too, and takes no line
            ib.reqMktData(Contract(conId=123, exchange="SMART"))
            await wait_until(lambda: [code for _, code, _ in errors if code < 2000] == [200, 200])
            assert sim.stats()["lines_in_use"] == 0

    asyncio.run(main())


def test_pnl_single_answers_for_a_position(sim) -> None:
    async def main() -> None:
        async with connected(sim.port) as ib:
            leg = demo_strategy_legs(sim.book)[0]
            pnl = ib.reqPnLSingle("DU1000001", "", leg.conid)
            await wait_until(lambda: pnl.position == sim.book.positions[("DU1000001", leg.conid)].position)
            book_pos = sim.book.positions[("DU1000001", leg.conid)]
            assert pnl.value != 0
            assert pnl.unrealizedPnL == pytest.approx(
                pnl.value - book_pos.avg_cost * book_pos.position, abs=0.02
            )
            assert sim.stats()["lines_in_use"] == 0  # PnL takes no market data line

    asyncio.run(main())


def test_a_snapshot_holds_its_line_until_tick_snapshot_end() -> None:
    async def main() -> None:
        async with GatewaySimulator(load_book("demo"), max_lines=1, snapshot_delay=0.5) as sim:
            errors: list = []
            async with connected(sim.port, errors=errors) as ib:
                first, second = (
                    Contract(conId=leg.conid, exchange="SMART") for leg in demo_strategy_legs(sim.book)[:2]
                )
                snapshot = ib.reqMktData(first, "", True, False)
                refused = ib.reqMktData(second)  # sent while the snapshot still holds the only line
                await wait_until(lambda: any(code == 101 for _, code, _ in errors))
                await wait_until(lambda: snapshot.bid > 0)  # its ticks come after the quote latency
                assert sim.stats()["lines_in_use"] == 1  # ... and it held the only line meanwhile
                await wait_until(lambda: sim.stats()["lines_in_use"] == 0)  # tickSnapshotEnd freed it
                assert refused.bid != refused.bid  # NaN: the refused stream got no data
                ib.cancelMktData(second)
                streamed = ib.reqMktData(second)
                await wait_until(lambda: streamed.bid > 0)
                assert [code for _, code, _ in errors if code < 2000] == [101]

    asyncio.run(main())


def test_prices_are_a_seeded_deterministic_walk_and_options_follow_the_model() -> None:
    book = load_book("demo")
    contracts = [book.contracts[leg.conid] for leg in demo_strategy_legs(book)]

    def walk(seed: int, steps: int = 30) -> list[tuple[float, float, float]]:
        market = Market(book, seed)
        for _ in range(steps):
            market.step()
        return [(q.bid, q.ask, q.und_price) for q in map(market.quote, contracts)]

    assert walk(7) == walk(7)
    assert walk(7) != walk(8)
    market = Market(book, 7)
    spy = book.underlyings["SPY"]
    call = next(c for c in contracts if c.symbol == "SPY" and c.right == "C")
    years = years_to_expiry(call.expiry)
    c = black_scholes(market.price("SPY"), call.strike, years, spy.volatility, "C")
    p = black_scholes(market.price("SPY"), call.strike, years, spy.volatility, "P")
    parity = market.price("SPY") - call.strike * math.exp(-RISK_FREE_RATE * years)
    assert c.price - p.price == pytest.approx(parity, abs=1e-6)  # put-call parity
    assert c.delta - p.delta == pytest.approx(1.0) and c.gamma == pytest.approx(p.gamma)
    quote = market.quote(call)
    assert quote.bid <= quote.greeks.price <= quote.ask and quote.greeks.implied_vol == spy.volatility


def test_a_step_walks_the_market_minutes_asked() -> None:
    # The same draws scaled by the step's length: a step of 0.25 s of market time (the demo's real pace)
    # moves the price sqrt(240) times less than the default minute, drift aside.
    book = load_book("demo")
    minute, quarter_second = Market(book, 3), Market(book, 3, step_minutes=0.25 / 60.0)
    start = minute.price("TSLA")
    minute.step()
    quarter_second.step()
    vol = book.underlyings["TSLA"].volatility
    years = 1.0 / (252 * 390)
    draw = (math.log(minute.price("TSLA") / start) + 0.5 * vol * vol * years) / (vol * math.sqrt(years))
    slow = years / 240.0
    expected = start * math.exp(draw * vol * math.sqrt(slow) - 0.5 * vol * vol * slow)
    assert quarter_second.price("TSLA") == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="step_minutes=0"):
        Market(book, 3, step_minutes=0)
