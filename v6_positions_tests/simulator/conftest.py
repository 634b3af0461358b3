"""The simulator tests' fixture: raw TWS-protocol socket clients, closed after each test (helpers live in
`sim_helpers.py`)."""

from __future__ import annotations

import pytest
from sim_helpers import RawClient


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
