"""Backoff, clientId range, subscription registry and handler isolation, without a gateway."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest
from ib_async import Contract, Ticker

from v6_positions.ib.connection.backoff import Backoff
from v6_positions.ib.connection.client_ids import ClientIdRange
from v6_positions.ib.connection.session import SessionConfig
from v6_positions.ib.lines.subscriptions import SubscriptionRegistry
from v6_positions.ib.rows.handlers import HandlerDispatcher
from v6_positions.lake.rows import PositionRow


def test_backoff_grows_exponentially_with_jitter_and_cap():
    backoff = Backoff(1.0, 8.0, jitter=0.2, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, nominal in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert nominal * 0.8 <= delay <= nominal * 1.2
    backoff.reset()
    assert backoff.next_delay() <= 1.2


def test_client_id_range_cycles():
    ids = ClientIdRange(SessionConfig(client_id=10, client_id_count=3).client_ids)
    assert [ids.current, ids.advance(), ids.advance(), ids.advance()] == [10, 11, 12, 10]


class FakeApi:
    def __init__(self) -> None:
        self.requests: list[int] = []
        self.cancels: list[int] = []
        self.kwargs: list[dict] = []

    def reqMktData(self, contract, genericTickList="", snapshot=False, regulatorySnapshot=False,  # noqa: N802,N803
                   mktDataOptions=None):  # noqa: N803
        self.requests.append(contract.conId)
        self.kwargs.append({"snapshot": snapshot, "genericTickList": genericTickList})
        return Ticker(contract=contract)

    def cancelMktData(self, contract):  # noqa: N802
        self.cancels.append(contract.conId)
        return True


def test_subscriptions_replay_exactly_the_desired_set():
    api = FakeApi()
    subs = SubscriptionRegistry(api)
    for conid in (1, 2, 3):
        assert subs.add(conid, Contract(conId=conid))
    assert not subs.add(2, Contract(conId=2))  # no duplicate request
    assert api.requests == [1, 2, 3] and all(k["snapshot"] is False for k in api.kwargs)
    assert subs.remove(3) and api.cancels == [3]

    subs.connection_lost()  # reconnect: nothing live, nothing cancelled on the wire
    assert subs.lines_in_use == 0 and subs.desired == {1, 2}
    assert subs.replay() == 2 and api.requests[-2:] == [1, 2]
    assert subs.replay() == 0  # already live: no duplicates

    assert subs.replay(renew_live=True) == 2  # 1101: cancel + request each
    assert api.cancels == [3, 1, 2] and subs.lines_in_use == 2

    subs.add(4, Contract(conId=4), connected=False)
    assert not subs.is_live(4) and subs.replay() == 1
    assert subs.clear() == 3 and subs.desired == set()


class Recorder:
    def __init__(self) -> None:
        self.seen: list[int] = []

    async def on_position_update(self, update: PositionRow) -> None:
        self.seen.append(update.conid)


class Broken:
    async def on_position_update(self, update: PositionRow) -> None:
        raise RuntimeError("boom")


class BrokenSync:
    def on_position_update(self, update: PositionRow):  # not even a coroutine
        raise ValueError("bad")


def make_update(conid: int) -> PositionRow:
    return PositionRow(
        "", conid, "SPY", right="C", position=1, market_price=1.0, market_value=100.0, average_cost=90.0,
        unrealized_pnl=10.0, event_time=datetime.now(UTC),
    )


def test_a_failing_handler_never_stops_the_others():
    async def scenario() -> tuple[Recorder, HandlerDispatcher]:
        good = Recorder()
        dispatcher = HandlerDispatcher([Broken(), good, BrokenSync()])
        dispatcher.start()
        for conid in (1, 2, 3):
            dispatcher.submit(make_update(conid))
        await dispatcher.drain_and_close()
        return good, dispatcher

    good, dispatcher = asyncio.run(scenario())
    assert good.seen == [1, 2, 3]
    assert dispatcher.errors == 6 and dispatcher.dispatched == 3


@pytest.mark.parametrize("count", [0, 5])
def test_drain_without_start_delivers_inline(count):
    async def scenario() -> Recorder:
        good = Recorder()
        dispatcher = HandlerDispatcher([good])
        for conid in range(count):
            dispatcher.submit(make_update(conid + 1))
        await dispatcher.drain_and_close()
        return good

    assert len(asyncio.run(scenario()).seen) == count
