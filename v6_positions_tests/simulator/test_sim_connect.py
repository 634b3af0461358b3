"""Connecting the real ib_async client: every startup request is answered; positions and portfolio mirror
the book."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from polling import wait_until
from sim_helpers import connect_ib, connected, option_row, spy_book

from v6_positions.simulator import SimulatorThread, book_from_dict, demo_strategy_legs, load_book
from v6_positions.simulator.book import BookError
from v6_positions.simulator.demo_books import third_fridays


# Startup "completes" means every request ib_async makes at connect was answered: connect_ib passes
# raiseSyncErrors=True, so one unanswered request fails the connect. How fast is the benchmarks' business.
def test_connect_one_account_completes_and_positions_equal_the_book(sim) -> None:
    async def main() -> None:
        async with connected(sim.port) as ib:
            assert ib.managedAccounts() == ["DU1000001"]
            got = {(p.account, p.contract.conId): (p.position, p.avgCost) for p in ib.positions()}
            want = {key: (p.position, p.avg_cost) for key, p in sim.book.positions.items()}
            assert got == want
            assert len(got) == 216
            assert {p.contract.secType for p in ib.positions()} == {"OPT", "STK"}

    asyncio.run(main())


def test_demo_book_has_three_condors_with_future_expiries() -> None:
    book = load_book("demo")
    legs = demo_strategy_legs(book)
    assert [leg.conid for leg in legs] == list(range(900000001, 900000013))
    assert {leg.symbol for leg in legs} == {"SPY", "QQQ", "IWM"}
    assert {leg.strategy_id for leg in legs} == {1, 2, 3}
    today = time.strftime("%Y%m%d")
    assert all(p.contract.expiry > today for p in book.positions.values() if p.contract.sec_type == "OPT")
    assert sum(p.contract.sec_type == "STK" for p in book.positions.values()) == 4
    assert load_book("demo").positions.keys() == book.positions.keys()  # deterministic


def test_portfolio_follows_ib_conventions_for_every_position(sim) -> None:
    async def main() -> None:
        async with connected(sim.port) as ib:
            items = ib.portfolio()
            assert len(items) == len(sim.book.positions)
            for item in items:
                book_pos = sim.book.positions[(item.account, item.contract.conId)]
                multiplier = float(item.contract.multiplier or 1)
                assert item.averageCost == book_pos.avg_cost
                assert item.marketValue == pytest.approx(
                    item.marketPrice * item.position * multiplier, abs=0.01
                )
                assert item.unrealizedPNL == pytest.approx(
                    item.marketValue - item.averageCost * item.position, abs=0.02
                )
                if item.contract.secType == "OPT":
                    assert multiplier == 100
                    # averageCost is per contract (multiplier included), marketPrice per share
                    assert 0.2 < item.averageCost / (item.marketPrice * multiplier) < 5
            # pushed again every portfolio_interval (2 s in the fixture)
            pushes: list = []
            ib.updatePortfolioEvent += pushes.append
            await wait_until(lambda: len(pushes) >= len(items), timeout=4)

    asyncio.run(main())


def test_connect_with_several_accounts() -> None:
    expiry = third_fridays(1)[0]
    book = book_from_dict(
        {
            "accounts": ["DU2000001", "DU2000002", "DU2000003"],
            "underlyings": [{"symbol": "SPY", "price": 580.0, "conid": 756733}],
            "positions": [
                {
                    "account": "DU2000001",
                    "conid": 1,
                    "symbol": "SPY",
                    "expiry": expiry,
                    "strike": 600,
                    "right": "C",
                    "position": -2,
                    "avg_cost": 310.0,
                },
                {
                    "account": "DU2000002",
                    "conid": 2,
                    "symbol": "SPY",
                    "expiry": expiry,
                    "strike": 550,
                    "right": "P",
                    "position": 3,
                    "avg_cost": 420.0,
                },
                {"account": "DU2000002", "conid": 756733, "symbol": "SPY", "sec_type": "STK", "position": 10},
            ],
        }
    )

    async def main(port: int) -> None:
        async with connected(port, client_id=5, account="DU2000002") as ib:
            assert ib.managedAccounts() == ["DU2000001", "DU2000002", "DU2000003"]
            assert {p.contract.conId for p in ib.positions()} == {1, 2, 756733}
            assert {i.contract.conId for i in ib.portfolio()} == {2, 756733}
            assert {v.account for v in ib.accountValues()} >= {"DU2000001", "DU2000002", "DU2000003"}
            summary = await asyncio.wait_for(ib.accountSummaryAsync(), 5)
            net_liq = {v.account: float(v.value) for v in summary if v.tag == "NetLiquidation"}
            assert set(net_liq) == {"DU2000001", "DU2000002", "DU2000003"}
            assert all(value > 0 for value in net_liq.values())
        # without account= and with several accounts ib_async skips reqAccountUpdates; startup still completes
        async with connected(port, client_id=6) as ib:
            assert ib.portfolio() == []

    with SimulatorThread(book) as running:
        asyncio.run(main(running.port))


def test_client_id_in_use_gets_326(sim) -> None:
    async def main() -> None:
        first = await connect_ib(sim.port, client_id=7)
        errors: list = []
        second = None
        try:
            with pytest.raises((ConnectionError, TimeoutError)):
                second = await connect_ib(sim.port, client_id=7, errors=errors, timeout=1)
            assert any(code == 326 for _, code, _ in errors)
            assert first.isConnected()
        finally:
            first.disconnect()
            if second is not None:
                second.disconnect()

    asyncio.run(main())


def test_bad_book_rows_are_refused_naming_row_and_field(tmp_path) -> None:
    good_row = option_row()
    base = spy_book()
    cases = [
        ({"strike": -5}, "positions[1].strike"),
        ({"right": "X"}, "positions[1].right"),
        ({"account": "DU9"}, "positions[1].account"),
        ({"expiry": "2026-12-18"}, "positions[1].expiry"),
        ({"symbol": "ZZZ"}, "positions[1].symbol"),
        ({"position": "ten"}, "positions[1].position"),
        ({"strike": float("nan")}, "positions[1].strike: must be a finite number"),
        ({"position": float("inf")}, "positions[1].position: must be a finite number"),
        ({"avg_cost": float("nan")}, "positions[1].avg_cost: must be a finite number"),
        ({"multiplier": True}, "positions[1].multiplier"),
        ({"avg_cst": 250.0}, "positions[1].avg_cst: unknown field"),  # a typo is not silently ignored
    ]
    for change, where in cases:
        path = tmp_path / "book.json"
        path.write_text(json.dumps(spy_book(good_row, option_row(conid=2, **change))))
        with pytest.raises(BookError, match=re.escape(where)):
            load_book(str(path))
    underlying_cases = [
        ([{"symbol": "SPY", "price": 500, "volatility": "high"}], "underlyings[0].volatility: expected"),
        ([{"symbol": "SPY", "price": float("nan")}], "underlyings[0].price: must be a finite number"),
        ([{"symbol": "SPY", "price": 500}, {"symbol": "SPY", "price": 501}], "underlyings[1].symbol: 'SPY'"),
        ([{"symbol": "SPY", "price": 500, "exchange": 7}], "underlyings[0].exchange: expected str"),
    ]
    for underlyings, where in underlying_cases:
        path = tmp_path / "book.json"
        path.write_text(json.dumps({**base, "underlyings": underlyings, "positions": [good_row]}))
        with pytest.raises(BookError, match=re.escape(where)):
            load_book(str(path))
    with pytest.raises(BookError, match="invalid JSON"):
        (tmp_path / "broken.json").write_text("{")
        load_book(str(tmp_path / "broken.json"))
    assert len(load_book("generated:50").positions) == 50


def test_large_generated_books_are_built_with_distinct_contracts():
    for count in (5_000, 20_000):
        book = load_book(f"generated:{count}")
        assert len(book.positions) == count
        contracts = [position.contract for position in book.positions.values()]
        keys = {(c.symbol, c.expiry, c.strike, c.right) for c in contracts}
        assert len(keys) == count
