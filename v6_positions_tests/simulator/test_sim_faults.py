"""Faults the gateway throws at clients: connectivity codes, restarts, dropped sockets, position changes."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from ib_async import Contract
from polling import wait_until
from sim_helpers import connect_ib, connected

from v6_positions.simulator import demo_strategy_legs


def _legs(sim, count: int) -> list[Contract]:
    return [Contract(conId=leg.conid, exchange="SMART") for leg in demo_strategy_legs(sim.book)[:count]]


def test_1101_drops_subscriptions_and_1102_keeps_them(sim) -> None:
    async def main() -> None:
        errors: list = []
        async with connected(sim.port, errors=errors) as ib:
            tickers = [ib.reqMktData(c) for c in _legs(sim, 3)]
            await wait_until(lambda: all(t.bid > 0 for t in tickers))
            sim.connectivity(1102)
            await wait_until(lambda: any(code == 1102 for _, code, _ in errors))
            assert sim.stats()["lines_in_use"] == 3
            sim.connectivity(1100)
            await wait_until(lambda: any(code == 1100 for _, code, _ in errors))
            assert sim.stats()["feed_down"] is True
            sim.connectivity(1101)
            await wait_until(lambda: any(code == 1101 for _, code, _ in errors))
            stats = sim.stats()
            assert stats["lines_in_use"] == 0 and stats["subscriptions_by_conid"] == {}
            assert stats["account_updates_holder"] is None  # account data lost too, must be re-requested
            updated: list = []
            ib.pendingTickersEvent += updated.extend
            steps = sim.stats()["market_steps"]
            await wait_until(lambda: sim.stats()["market_steps"] >= steps + 2)  # two tick rounds went by
            await asyncio.wait_for(ib.reqCurrentTimeAsync(), 5)  # and everything sent before it was read
            assert updated == []  # nothing arrived for the dropped streams
            assert ib.isConnected()

    asyncio.run(main())


def test_restart_refuses_then_accepts(sim) -> None:
    async def main() -> None:
        ib = await connect_ib(sim.port)
        closed = asyncio.Event()
        ib.disconnectedEvent += closed.set
        restarted = time.monotonic()
        sim.restart(1.0)
        await asyncio.wait_for(closed.wait(), 3)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", sim.port), timeout=2).close()
        assert sim.stats()["accepting"] is False
        while True:  # a client retrying as ib_async users do
            try:
                ib = await connect_ib(sim.port, client_id=1)
                break
            except (ConnectionRefusedError, OSError):
                assert time.monotonic() - restarted < 10
                await asyncio.sleep(0.1)
        try:
            assert time.monotonic() - restarted >= 0.95  # refused for the whole down time
            assert len(ib.positions()) == len(sim.book.positions)
        finally:
            ib.disconnect()

    asyncio.run(main())


def test_disconnect_all_drops_every_client(sim) -> None:
    async def main() -> None:
        a = await connect_ib(sim.port, client_id=1)
        b = await connect_ib(sim.port, client_id=2)
        a.reqMktData(_legs(sim, 1)[0])
        await wait_until(lambda: sim.stats()["lines_in_use"] == 1)
        assert sim.disconnect_all() == 2
        await wait_until(lambda: not a.isConnected() and not b.isConnected())
        stats = sim.stats()
        assert stats["clients"] == [] and stats["lines_in_use"] == 0
        again = await connect_ib(sim.port, client_id=1)  # the clientId is free again
        again.disconnect()

    asyncio.run(main())


def test_account_updates_have_one_holder_and_the_old_one_gets_2100(sim) -> None:
    async def main() -> None:
        errors_a: list = []
        a = await connect_ib(sim.port, client_id=1, errors=errors_a)
        assert sim.stats()["account_updates_holder"] == 1
        b = await connect_ib(sim.port, client_id=2)
        try:
            await wait_until(lambda: any(code == 2100 for _, code, _ in errors_a))
            assert sim.stats()["account_updates_holder"] == 2
            pushes_a: list = []
            pushes_b: list = []
            a.updatePortfolioEvent += pushes_a.append
            b.updatePortfolioEvent += pushes_b.append
            await wait_until(lambda: len(pushes_b) >= len(sim.book.positions), timeout=4)  # 2 s interval
            assert pushes_a == []
        finally:
            a.disconnect()
            b.disconnect()

    asyncio.run(main())


def test_set_position_opens_changes_and_closes(sim) -> None:
    async def main() -> None:
        async with connected(sim.port) as ib:
            events: list = []
            portfolio: list = []
            ib.positionEvent += events.append
            ib.updatePortfolioEvent += portfolio.append
            leg = demo_strategy_legs(sim.book)[0]
            sim.set_position("DU1000001", leg.conid, 4)  # change
            await wait_until(lambda: any(e.contract.conId == leg.conid and e.position == 4 for e in events))
            await wait_until(
                lambda: any(p.contract.conId == leg.conid and p.position == 4 for p in portfolio)
            )
            sim.set_position(
                "DU1000001",
                990000001,
                -2,
                avg_cost=123.0,
                symbol="SPY",
                sec_type="OPT",
                expiry=leg.expiry,
                strike=600.0,
                right="C",
            )  # open a new contract
            await wait_until(lambda: 990000001 in {p.contract.conId for p in ib.positions()})
            await wait_until(lambda: 990000001 in {p.contract.conId for p in ib.portfolio()})
            details = await ib.reqContractDetailsAsync(Contract(conId=990000001))
            assert details and details[0].contract.strike == 600.0
            sim.set_position("DU1000001", 990000001, 0)  # close
            await wait_until(lambda: 990000001 not in {p.contract.conId for p in ib.positions()})
            await wait_until(lambda: 990000001 not in {p.contract.conId for p in ib.portfolio()})
            assert any(e.contract.conId == 990000001 and e.position == 0 for e in events)

    asyncio.run(main())
