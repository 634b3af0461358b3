"""Who may connect: version ranges, clientIds, the 32-client limit, and clients that misbehave on the wire.

These run `GatewaySimulator` in-process (`async with`) and talk to it over TCP with asyncio streams or the
real ib_async client on the same loop.
"""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest
from polling import wait_until
from sim_helpers import connect_ib, connected

from v6_positions.simulator import GatewaySimulator, load_book
from v6_positions.simulator.framing import encode_message

READ_TIMEOUT_S = 5.0


class AsyncRawClient:
    """A bare TWS API client on asyncio streams (the simulator shares the test's event loop)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> AsyncRawClient:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send_handshake(self, versions: str) -> None:
        self.writer.write(b"API\0" + struct.pack(">I", len(versions)) + versions.encode())

    def send(self, *fields: object) -> None:
        self.writer.write(encode_message(fields))

    async def read(self) -> list[str]:
        header = await asyncio.wait_for(self.reader.readexactly(4), READ_TIMEOUT_S)
        (length,) = struct.unpack(">I", header)
        body = await asyncio.wait_for(self.reader.readexactly(length), READ_TIMEOUT_S)
        return body.decode().split("\0")[:-1]

    async def read_until(self, predicate, limit: int = 100) -> list[str]:
        for _ in range(limit):
            fields = await self.read()
            if predicate(fields):
                return fields
        raise AssertionError("message not received")

    async def start_api(self, client_id: int) -> list[str]:
        """Handshake + startApi; returns the server-version message."""
        self.send_handshake("v157..178")
        version = await self.read()
        self.send(71, 2, client_id, "")
        await self.read_until(lambda f: f[0] == "15")  # managedAccounts: the session is up
        return version

    async def closed_by_server(self) -> bytes:
        """Wait (bounded) until the server closes; returns whatever it sent first (b"" = nothing)."""
        received = b""
        try:
            while chunk := await asyncio.wait_for(self.reader.read(65536), READ_TIMEOUT_S):
                received += chunk
        except ConnectionError:
            pass
        return received

    def close(self) -> None:
        self.writer.close()


def _small_book():
    return load_book("generated:5")


def test_any_version_range_that_includes_176_gets_server_version_176() -> None:
    async def main() -> None:
        async with GatewaySimulator(_small_book()) as sim:
            accepted = ["v176", "v100..176", "v176..200", "v157..178", "v157..178 +PACEAPI", "v100..300"]
            for client_id, versions in enumerate(accepted, start=1):
                client = await AsyncRawClient.connect(sim.port)
                client.send_handshake(versions)
                server_version, connection_time = await client.read()
                assert server_version == "176", versions
                assert connection_time.endswith("Greenwich Mean Time")
                client.send(71, 2, client_id, "")
                assert (await client.read_until(lambda f: f[0] == "9"))[2] >= "1"  # nextValidId
                assert (await client.read_until(lambda f: f[0] == "15"))[2] == "DU1000001"
                client.close()
            for versions in ("v100..175", "v177..200", "v200..150"):
                client = await AsyncRawClient.connect(sim.port)
                client.send_handshake(versions)
                assert await client.closed_by_server() == b"", versions
            assert sim.stats()["bad_input"] == 3

    asyncio.run(main())


def test_client_id_in_use_gets_326_and_is_closed_while_the_first_keeps_working() -> None:
    async def main() -> None:
        async with GatewaySimulator(_small_book()) as sim:
            first = await AsyncRawClient.connect(sim.port)
            await first.start_api(7)
            second = await AsyncRawClient.connect(sim.port)
            second.send_handshake("v157..178")
            await second.read()
            second.send(71, 2, 7, "")
            error = await second.read()
            assert error[:4] == ["4", "2", "-1", "326"] and "already in use" in error[4]
            assert await second.closed_by_server() == b""  # nothing after the 326: closed
            first.send(49, 1)  # reqCurrentTime
            assert (await first.read_until(lambda f: f[0] == "49"))[2].isdigit()
            stats = sim.stats()
            assert [c["client_id"] for c in stats["clients"]] == [7]
            assert stats["errors"]["326"] == 1
            first.close()

    asyncio.run(main())


def test_32_concurrent_ib_async_clients_and_the_33rd_is_refused() -> None:
    async def main() -> None:
        async with GatewaySimulator(_small_book()) as sim:
            clients = await asyncio.gather(
                *(connect_ib(sim.port, client_id=i, timeout=20) for i in range(1, 33))
            )
            try:
                assert all(ib.isConnected() for ib in clients)
                assert [c["client_id"] for c in sim.stats()["clients"]] == list(range(1, 33))
                times = await asyncio.gather(*(ib.reqCurrentTimeAsync() for ib in clients))
                assert len(times) == 32  # every one of them is served
                extra = await AsyncRawClient.connect(sim.port)
                assert await extra.closed_by_server() == b""
                assert sim.stats()["connections_rejected"] == 1
                clients[0].disconnect()
                await wait_until(lambda: len(sim.stats()["clients"]) == 31)
                late = await connect_ib(sim.port, client_id=33, timeout=10)  # a free slot is usable again
                clients.append(late)
                assert len(sim.stats()["clients"]) == 32
            finally:
                for ib in clients:
                    ib.disconnect()

    asyncio.run(main())


def test_clients_that_leave_mid_message_or_mid_handshake_are_dropped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="v6_positions.simulator")

    async def main() -> None:
        async with GatewaySimulator(_small_book()) as sim:
            async with connected(sim.port, client_id=1) as ib:
                midway = await AsyncRawClient.connect(sim.port)
                await midway.start_api(42)
                midway.writer.write(struct.pack(">I", 100) + b"61\x001\x00")  # 100 bytes announced, 5 sent
                await midway.writer.drain()
                midway.close()
                half_handshake = await AsyncRawClient.connect(sim.port)
                half_handshake.writer.write(b"API\0\x00\x00")  # half of the length prefix
                await half_handshake.writer.drain()
                half_handshake.close()

                await wait_until(lambda: "disconnected mid-message" in caplog.text)
                await wait_until(lambda: [c["client_id"] for c in sim.stats()["clients"]] == [1])
                await wait_until(lambda: len(sim.sessions) == 1)  # the half handshake is gone too
                assert ib.isConnected()
                assert await asyncio.wait_for(ib.reqCurrentTimeAsync(), READ_TIMEOUT_S)
                again = await AsyncRawClient.connect(sim.port)
                await again.start_api(42)  # its clientId was freed
                again.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
        pytest.param(b"\xff" * 64, id="binary"),
        pytest.param(b"API\0" + struct.pack(">I", 0xFFFFFFF0) + b"v176", id="huge-version-length"),
        pytest.param(b"API\0" + struct.pack(">I", 9) + b"hello!!!!", id="not-a-version-range"),
        pytest.param(b"API\0" + struct.pack(">I", 4) + b"v176" + encode_message([49, 1]), id="no-startApi"),
    ],
)
def test_garbage_before_the_handshake_closes_only_that_connection(garbage: bytes) -> None:
    async def main() -> None:
        async with GatewaySimulator(_small_book(), tick_interval=0.05) as sim:
            async with connected(sim.port, client_id=1) as ib:
                ticker = ib.reqMktData(ib.positions()[0].contract)
                await wait_until(lambda: ticker.bid > 0)
                bad = await AsyncRawClient.connect(sim.port)
                bad.writer.write(garbage)
                sent_back = await bad.closed_by_server()
                assert b"\x004\x00" not in sent_back  # closed, not answered with an API error
                assert sim.stats()["bad_input"] == 1
                updates: list = []
                ib.pendingTickersEvent += updates.extend
                await wait_until(lambda: len(updates) > 0)  # the good client keeps streaming
                assert ib.isConnected() and sim.stats()["lines_in_use"] == 1

    asyncio.run(main())
