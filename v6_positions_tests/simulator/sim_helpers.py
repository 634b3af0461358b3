"""Helpers for the simulator tests: connected ib_async clients, the book's contracts, the control API over
HTTP, one-row JSON books, and a raw TWS-protocol socket client."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

from ib_async import IB, Contract

from v6_positions.simulator.book import Book
from v6_positions.simulator.demo_books import third_fridays
from v6_positions.simulator.framing import encode_message


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


@contextlib.asynccontextmanager
async def connected(port: int, client_id: int = 1, **kwargs: Any) -> AsyncIterator[IB]:
    """`async with connected(sim.port, errors=errors) as ib:` — connect_ib, disconnected on the way out."""
    ib = await connect_ib(port, client_id, **kwargs)
    try:
        yield ib
    finally:
        ib.disconnect()


def option_contracts(book: Book, count: int, skip: int = 0) -> list[Contract]:
    """`count` option positions of the book by conid (after the first `skip`), as market-data contracts."""
    conids = sorted(c for (_, c), p in book.positions.items() if p.contract.sec_type == "OPT")
    return [Contract(conId=conid, exchange="SMART") for conid in conids[skip : skip + count]]


def control_call(port: int, method: str, path: str, body: dict | None = None) -> dict:
    """One control-API call; an error status raises urllib's HTTPError."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def control_status(port: int, path: str, body: dict) -> tuple[int, dict]:
    """POST to the control API; (status, JSON answer) whether it succeeded or not."""
    try:
        return 200, control_call(port, "POST", path, body)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def option_row(**fields: Any) -> dict[str, Any]:
    """A valid JSON-book position row (one SPY call in account DU1, expiring next month), with `fields`."""
    row = {
        "account": "DU1",
        "conid": 1,
        "symbol": "SPY",
        "expiry": third_fridays(1)[0],
        "strike": 600,
        "right": "C",
        "position": 1,
    }
    return {**row, **fields}


def spy_book(*rows: dict[str, Any], price: float = 500.0) -> dict[str, Any]:
    """A JSON book: account DU1, the SPY underlying at `price`, and `rows` as its positions."""
    return {"accounts": ["DU1"], "underlyings": [{"symbol": "SPY", "price": price}], "positions": list(rows)}


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
