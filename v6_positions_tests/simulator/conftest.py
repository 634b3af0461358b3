"""Helpers for the simulator tests: bounded waits and a raw TWS-protocol socket client."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable

import pytest
from ib_async import IB

from v6_positions.simulator.framing import encode_message


async def wait_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def connect_ib(
    port: int, client_id: int = 1, account: str = "", errors: list | None = None, timeout: float = 4
) -> IB:
    ib = IB()
    if errors is not None:
        ib.errorEvent += lambda req_id, code, msg, contract: errors.append((req_id, code, msg))
    await ib.connectAsync(
        "127.0.0.1",
        port,
        clientId=client_id,
        readonly=True,
        account=account,
        timeout=timeout,
        raiseSyncErrors=True,
    )
    return ib


class RawClient:
    """A bare TWS API client on a blocking socket, for sending what ib_async never would."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffer = b""

    def handshake(self, client_id: int) -> list[str]:
        self.sock.sendall(b"API\0" + struct.pack(">I", 9) + b"v157..178")
        version = self.read()
        self.send(71, 2, client_id, "")
        return version

    def send(self, *fields: object) -> None:
        self.sock.sendall(encode_message(fields))

    def read(self) -> list[str]:
        while True:
            if len(self.buffer) >= 4:
                (length,) = struct.unpack(">I", self.buffer[:4])
                if len(self.buffer) >= 4 + length:
                    body, self.buffer = self.buffer[4 : 4 + length], self.buffer[4 + length :]
                    return body.decode().split("\0")[:-1]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by server")
            self.buffer += chunk

    def read_until(self, predicate: Callable[[list[str]], bool], limit: int = 2000) -> list[str]:
        for _ in range(limit):
            fields = self.read()
            if predicate(fields):
                return fields
        raise AssertionError("message not received")

    def is_closed_by_server(self) -> bool:
        try:
            while True:
                self.read()
        except (ConnectionError, OSError):
            return True
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_client():
    clients: list[RawClient] = []

    def make(port: int) -> RawClient:
        client = RawClient(port)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
