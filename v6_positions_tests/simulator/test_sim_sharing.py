"""Sharing one gateway, as IB does it: account-wide lines, one account-updates holder, clientIds held by dead
sockets, a competing live session, and the odd values IB sends (10090, -2 greeks, one-sided wings) — all seen
through real ib_async clients over TCP, the second one playing the trader's bot."""

from __future__ import annotations

import asyncio
import math
import re
import urllib.error
import urllib.request

import pytest
from ib_async import Contract
from polling import wait_until
from sim_helpers import connect_ib, connected, control_call, option_contracts, option_row, spy_book

from v6_positions.simulator import BookError, SimulatorThread, book_from_dict, load_book
from v6_positions.simulator.demo_books import FA_ACCOUNT, third_fridays


def test_lines_are_shared_by_every_client_and_freed_lines_can_be_taken() -> None:
    with SimulatorThread(load_book("demo"), max_lines=20) as sim:

        async def main() -> None:
            stream_errors: list = []
            bot = await connect_ib(sim.port, client_id=2)
            async with connected(sim.port, client_id=1, errors=stream_errors) as stream:
                bot_tickers = [bot.reqMktData(c) for c in option_contracts(sim.book, 15)]
                await wait_until(lambda: sim.stats()["lines_by_client"].get("2") == 15)
                mine = option_contracts(sim.book, 10, skip=15)
                tickers = [stream.reqMktData(c) for c in mine]
                await wait_until(lambda: sum(code == 101 for _, code, _ in stream_errors) == 5)
                await wait_until(lambda: all(t.ask > 0 for t in tickers[:5]))
                stats = sim.stats()
                assert stats["lines_in_use"] == 20
                assert stats["lines_by_client"] == {"1": 5, "2": 15}
                assert stats["errors_by_client"]["1"] == {"101": 5}
                assert "101" not in stats["errors_by_client"].get("2", {})
                assert all(math.isnan(t.ask) for t in tickers[5:])  # refused: never a tick
                # the bot frees its lines; the refused contracts can stream now
                for ticker in bot_tickers:
                    bot.cancelMktData(ticker.contract)
                await wait_until(lambda: sim.stats()["lines_by_client"].get("2") == 0)
                for contract in mine[5:]:
                    stream.cancelMktData(contract)
                again = [stream.reqMktData(c) for c in mine[5:]]
                await wait_until(lambda: all(t.ask > 0 for t in again))
                # lines held outside the API (TWS, the phone app) count too
                sim.hold_lines(10)
                late = stream.reqMktData(option_contracts(sim.book, 1, skip=30)[0])
                await wait_until(lambda: sum(code == 101 for _, code, _ in stream_errors) == 6)
                assert math.isnan(late.ask)
                stats = sim.stats()
                assert stats["external_lines"] == 10 and stats["lines_in_use"] == 20
                assert stats["orders_received"] == 0
                bot.disconnect()
            await wait_until(lambda: sim.stats()["lines_in_use"] == 10)  # only the external ones remain

        asyncio.run(main())


def test_a_bot_taking_account_updates_sends_2100_to_the_holder_and_stats_say_who(sim) -> None:
    async def main() -> None:
        stream_errors: list = []
        stream = await connect_ib(sim.port, client_id=1, errors=stream_errors)
        bot = await connect_ib(sim.port, client_id=2)  # ib_async's default on a one-account login subscribes
        try:
            await wait_until(lambda: any(code == 2100 for _, code, _ in stream_errors))
            stats = sim.stats()
            assert stats["account_updates_holder"] == 2
            assert stats["errors_by_client"]["1"]["2100"] == 1
            assert "2100" not in stats["errors_by_client"].get("2", {})
            assert stats["account_updates_requests_by_client"] == {"1": 1, "2": 1}
            assert [c["errors"].get("2100", 0) for c in stats["clients"]] == [1, 0]
        finally:
            bot.disconnect()
            stream.disconnect()
        await wait_until(lambda: sim.stats()["account_updates_holder"] is None)
        # the counts outlive the connections (until /reset-stats)
        assert sim.stats()["errors_by_client"]["1"]["2100"] == 1
        sim.reset_stats()
        assert sim.stats()["errors_by_client"] == {}

    asyncio.run(main())


def test_a_dead_socket_keeps_its_client_id_and_lines_until_the_gateway_drops_it(sim) -> None:
    async def main() -> None:
        sim.set_client_id_linger(1.0)
        first = await connect_ib(sim.port, client_id=7)
        tickers = [first.reqMktData(c) for c in option_contracts(sim.book, 3)]
        await wait_until(lambda: all(t.ask > 0 for t in tickers))
        first.disconnect()
        await wait_until(lambda: sim.stats()["lingering_clients"] != [])
        stats = sim.stats()
        assert stats["lingering_clients"][0]["client_id"] == 7 and stats["lingering_clients"][0]["lines"] == 3
        assert 0 < stats["lingering_clients"][0]["released_in"] <= 1.0
        assert stats["lines_in_use"] == 3 and stats["lines_by_client"] == {"7": 3}
        errors: list = []
        with pytest.raises((ConnectionError, TimeoutError)):
            await connect_ib(sim.port, client_id=7, errors=errors, timeout=0.5)
        assert any(code == 326 for _, code, _ in errors)
        assert sim.stats()["errors_by_client"]["7"]["326"] >= 1
        await wait_until(lambda: sim.stats()["lingering_clients"] == [], timeout=3)
        assert sim.stats()["lines_in_use"] == 0
        again = await connect_ib(sim.port, client_id=7)  # the same id works once the gateway dropped it
        again.disconnect()

    asyncio.run(main())


def test_a_held_client_id_gets_326_until_released(sim) -> None:
    async def main() -> None:
        sim.hold_client_id(9, 30)
        assert "9" in sim.stats()["held_client_ids"]
        errors: list = []
        with pytest.raises((ConnectionError, TimeoutError)):
            await connect_ib(sim.port, client_id=9, errors=errors, timeout=0.5)
        assert [code for _, code, _ in errors].count(326) == 1
        sim.hold_client_id(9, 0)
        ib = await connect_ib(sim.port, client_id=9)
        assert ib.isConnected()
        ib.disconnect()
        assert sim.stats()["held_client_ids"] == {}

    asyncio.run(main())


def test_10090_is_a_warning_and_the_data_still_streams(sim) -> None:
    async def main() -> None:
        contract = option_contracts(sim.book, 1)[0]
        sim.set_quirks(contract.conId, data_warning=10090)
        errors: list = []
        async with connected(sim.port, errors=errors) as ib:
            ticker = ib.reqMktData(contract)
            await wait_until(lambda: any(code == 10090 for _, code, _ in errors))
            await wait_until(lambda: ticker.bid > 0 and ticker.ask > 0 and ticker.modelGreeks is not None)
            req_id, _, text = next(e for e in errors if e[1] == 10090)
            assert req_id > 0 and text.startswith("Part of requested market data is not subscribed")
            assert sim.stats()["lines_in_use"] == 1

    asyncio.run(main())


def test_competing_live_session_sends_10197_and_stops_ticks_until_it_ends(sim) -> None:
    async def main() -> None:
        errors: list = []
        ib = await connect_ib(sim.port, errors=errors)
        updates: list[int] = []
        ib.pendingTickersEvent += lambda tickers: updates.extend(t.contract.conId for t in tickers)
        try:
            contracts = option_contracts(sim.book, 2)
            tickers = [ib.reqMktData(c) for c in contracts]
            await wait_until(lambda: all(t.ask > 0 for t in tickers))
            sim.competing_session(True)
            await wait_until(lambda: [code for _, code, _ in errors].count(10197) == 2)
            assert sim.stats()["competing_session"] is True
            updates.clear()  # ticks sent before the 10197s were handled before them (one socket, in order)
            late = ib.reqMktData(option_contracts(sim.book, 1, skip=5)[0])
            await wait_until(lambda: [code for _, code, _ in errors].count(10197) == 3)
            # the market keeps moving (three steps), but nobody gets a tick
            stats = sim.stats()
            await wait_until(lambda: sim.stats()["market_steps"] >= stats["market_steps"] + 3)
            assert sim.stats()["tick_messages_sent"] == stats["tick_messages_sent"] and updates == []
            assert math.isnan(late.ask) and sim.stats()["lines_in_use"] == 3  # lines stay held
            sim.competing_session(False)
            await wait_until(lambda: set(updates) >= {c.conId for c in contracts} and late.ask > 0)
        finally:
            ib.disconnect()

    asyncio.run(main())


def test_missing_greeks_arrive_as_ibs_sentinels(sim) -> None:
    async def main() -> None:
        a, b = option_contracts(sim.book, 2)
        sim.set_quirks(a.conId, missing_greeks=["vega", "theta"])
        sim.set_quirks(b.conId, missing_greeks=["delta", "gamma", "implied_vol"])
        async with connected(sim.port) as ib:
            ta, tb = ib.reqMktData(a), ib.reqMktData(b)
            await wait_until(lambda: ta.modelGreeks is not None and tb.modelGreeks is not None)
            # ib_async maps -2 to None for delta and gamma only: vega/theta come through as -2.0
            assert ta.modelGreeks.vega == -2.0 and ta.modelGreeks.theta == -2.0
            assert -1 <= ta.modelGreeks.delta <= 1 and ta.modelGreeks.gamma > 0
            assert tb.modelGreeks.delta is None and tb.modelGreeks.gamma is None
            assert tb.modelGreeks.impliedVol is None and tb.modelGreeks.vega > 0
            assert ta.bidGreeks.vega == -2.0  # every computation tick, not only the model one

    asyncio.run(main())


def test_a_one_sided_wing_has_no_bid_a_stale_last_and_ibs_model_price() -> None:
    expiry = third_fridays(2)[1]
    book = book_from_dict(
        {
            "accounts": ["DU1"],
            "underlyings": [{"symbol": "SPY", "price": 580.0, "volatility": 0.16, "conid": 756733}],
            "positions": [
                {
                    "account": "DU1",
                    "conid": 11,
                    "symbol": "SPY",
                    "expiry": expiry,
                    "strike": 700,
                    "right": "C",
                    "position": 1,
                    "avg_cost": 40.0,
                    "one_sided": True,
                    "stale_last": 1.85,
                }
            ],
        }
    )
    with SimulatorThread(book, tick_interval=0.05) as sim:

        async def main() -> None:
            async with connected(sim.port, account="DU1") as ib:
                ticker = ib.reqMktData(Contract(conId=11, exchange="SMART"))
                await wait_until(lambda: ticker.modelGreeks is not None and ticker.ask > 0)
                steps = sim.stats()["market_steps"]
                await wait_until(lambda: sim.stats()["market_steps"] >= steps + 5)
                assert ticker.bid == -1 and ticker.bidSize == 0  # IB's -1 / size 0 (ib_async keeps -1)
                assert ticker.last == 1.85  # stale, never updated
                model = ticker.modelGreeks.optPrice
                assert 0 < model < 1.85 and model < ticker.ask
                assert ticker.bidGreeks is None and ticker.askGreeks is not None
                # IB marks the position with its model price, not the stale last
                item = next(i for i in ib.portfolio() if i.contract.conId == 11)
                assert item.marketPrice < 1.0

        asyncio.run(main())


def test_a_login_with_several_managed_accounts_answers_positions_and_pnl_per_account() -> None:
    with SimulatorThread(load_book("demo-fa")) as sim:

        async def main() -> None:
            async with connected(sim.port, client_id=3) as ib:
                assert ib.managedAccounts() == ["DU1000001", FA_ACCOUNT]
                by_account: dict[str, set[int]] = {}
                for p in ib.positions():
                    by_account.setdefault(p.account, set()).add(p.contract.conId)
                assert len(by_account[FA_ACCOUNT]) == 23 and len(by_account["DU1000001"]) == 216
                assert {900000001, 900000002} <= by_account[FA_ACCOUNT] & by_account["DU1000001"]
                assert ib.portfolio() == []  # ib_async does not take account updates with 2+ accounts
                mine = ib.reqPnLSingle("DU1000001", "", 900000001)
                fa = ib.reqPnLSingle(FA_ACCOUNT, "", 900000001)
                await wait_until(lambda: mine.position == 1 and fa.position == 2)
                assert fa.value == pytest.approx(2 * mine.value, rel=1e-6)
                none = ib.reqPnLSingle(FA_ACCOUNT, "", 910000001)  # not held in that account
                await wait_until(lambda: not math.isnan(none.value))  # answered (fields start as NaN)
                assert none.position == 0 and none.value == 0
                assert sim.stats()["pnl_single_requests_by_client"] == {"3": 3}
                assert sim.stats()["account_updates_holder"] is None

        asyncio.run(main())


def test_quirk_fields_are_validated_in_books_and_the_control_api(sim) -> None:
    for extra, message in (
        ({"data_warning": 10092}, "positions[0].data_warning: must be 10090, 10091 or null"),
        ({"missing_greeks": ["rho"]}, "positions[0].missing_greeks: unknown name 'rho'"),
        ({"one_sided": "yes"}, "positions[0].one_sided: expected true or false"),
        ({"stale_last": -1}, "positions[0].stale_last: must be a finite number > 0"),
    ):
        with pytest.raises(BookError, match=re.escape(message)):
            book_from_dict(spy_book(option_row(**extra), price=580.0))
    port = sim.control_port
    conid = option_contracts(sim.book, 1)[0].conId
    assert control_call(port, "POST", "/quirks", {"conid": conid, "one_sided": True})["one_sided"] is True
    assert control_call(port, "POST", "/hold-lines", {"lines": 3}) == {"external_lines": 3}
    assert sim.stats()["lines_in_use"] == 3
    for path, body in (
        ("/quirks", {"conid": 1, "one_sided": True}),
        ("/quirks", {"conid": conid, "data_warning": 1}),
        ("/hold-lines", {"lines": -1}),
        ("/hold-lines", {}),
        ("/competing-session", {"active": "yes"}),
        ("/hold-client-id", {"client_id": 4}),
    ):
        with pytest.raises(urllib.error.HTTPError) as bad:
            control_call(port, "POST", path, body)
        assert bad.value.code == 400, (path, body)
    assert sim.stats()["orders_received"] == 0
