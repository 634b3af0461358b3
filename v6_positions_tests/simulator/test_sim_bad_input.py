"""Bad and forbidden input: each bad client gets an error or is closed, and everyone else is unaffected.

More wire-level cases (version ranges, garbage handshakes, clients leaving mid-message) are in
test_sim_clients.py.
"""

from __future__ import annotations

import asyncio
import struct

from ib_async import Contract, LimitOrder
from polling import wait_until
from sim_helpers import connected

from v6_positions.simulator import demo_strategy_legs
from v6_positions.simulator.framing import encode_message


def _is_error(code: int):
    return lambda fields: fields[0] == "4" and fields[3] == str(code)


def test_garbage_clients_do_not_disturb_a_streaming_client(sim, raw_client) -> None:
    async def main() -> None:
        async with connected(sim.port) as ib:
            ticker = ib.reqMktData(Contract(conId=demo_strategy_legs(sim.book)[0].conid, exchange="SMART"))
            await wait_until(lambda: ticker.bid > 0)

            garbage = raw_client(sim.port)  # garbage before the handshake: closed
            garbage.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert garbage.is_closed_by_server()

            oversized = raw_client(sim.port)  # a malformed frame after the handshake: closed
            oversized.handshake(41)
            oversized.read_until(lambda f: f[0] == "15")
            oversized.sock.sendall(struct.pack(">I", 0x7FFFFFFF) + b"xx")
            assert oversized.is_closed_by_server()

            sloppy = raw_client(sim.port)  # unknown id and missing fields: errors, connection kept
            sloppy.handshake(43)
            sloppy.send(999, 1)
            sloppy.read_until(_is_error(505))
            sloppy.send(1, 11)  # reqMktData without its fields
            sloppy.read_until(_is_error(320))
            sloppy.send(49, 1)
            assert sloppy.read_until(lambda f: f[0] == "49")[2].isdigit()

            updated: list = []
            ib.pendingTickersEvent += updated.extend
            await wait_until(lambda: len(updated) > 0)
            assert ib.isConnected()
            stats = sim.stats()
            assert stats["bad_input"] >= 4
            assert stats["errors"]["505"] == 1 and stats["errors"]["320"] == 1
            assert {c["client_id"] for c in stats["clients"]} == {1, 43}

    asyncio.run(main())


def test_duplicate_req_id_gets_322_and_keeps_the_first(sim, raw_client) -> None:
    conid = demo_strategy_legs(sim.book)[0].conid
    client = raw_client(sim.port)
    client.handshake(9)
    request = (1, 11, 77, conid, "", "", "", "", "", "", "SMART", "", "", "", "", 0, "", 0, 0, "")
    client.send(*request)
    client.read_until(lambda f: f[0] == "1" and f[2] == "77")
    client.send(*request)
    client.read_until(_is_error(322))
    stats = sim.stats()
    assert stats["lines_in_use"] == 1 and stats["errors"]["322"] == 1


def _time_or_pacing(fields: list[str]) -> bool:
    return fields[0] == "49" or (fields[0] == "4" and fields[3] == "100")


def test_pacing_50_messages_at_once_pass_and_the_51st_gets_error_100(sim, raw_client) -> None:
    within = raw_client(sim.port)
    within.handshake(11)
    within.sock.sendall(encode_message([49, 1]) * 50)  # reqCurrentTime x 50, in one burst
    answers = [within.read_until(_time_or_pacing) for _ in range(50)]
    assert [f[0] for f in answers] == ["49"] * 50  # no error 100 among them
    assert sim.stats()["pacing_violations"] == 0

    over = raw_client(sim.port)  # another client: its own 50 per second
    over.handshake(12)
    over.sock.sendall(encode_message([49, 1]) * 51)
    answers = [over.read_until(_time_or_pacing) for _ in range(52)]
    assert sum(f[0] == "4" for f in answers) == 1
    assert sum(f[0] == "49" for f in answers) == 51  # the request is still answered, as at IB
    stats = sim.stats()
    assert stats["pacing_violations"] == 1 and stats["errors"]["100"] == 1
    assert {c["client_id"]: c["pacing_violations"] for c in stats["clients"]} == {11: 0, 12: 1}


def test_order_messages_are_refused_and_counted(sim) -> None:
    async def main() -> None:
        errors: list = []
        async with connected(sim.port, errors=errors) as ib:
            leg = demo_strategy_legs(sim.book)[0]
            ib.placeOrder(Contract(conId=leg.conid, exchange="SMART"), LimitOrder("BUY", 1, 1.0))
            ib.client.cancelOrder(12345)
            ib.client.send(58, 1)  # reqGlobalCancel
            await wait_until(lambda: sim.stats()["orders_received"] == 3)
            await wait_until(lambda: sum(code == 321 for _, code, _ in errors) == 3)
            assert "Read-Only" in next(msg for _, code, msg in errors if code == 321)
            assert ib.isConnected()

    asyncio.run(main())
