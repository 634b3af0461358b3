"""The trader's bot on the shared gateway (a second, unmodified ib_async client) and what the gateway sees:
lines per client, errors per client, and a watch that samples both while a scenario runs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from ib_async import IB, Contract

from v6_positions.ib.streamer import PositionStreamer
from v6_positions.lake import StrategyRegistry
from v6_positions.simulator import SimulatorThread

STREAM_ID = 12
BOT_ID = 70


def register_legs(kit, sim: SimulatorThread, count: int) -> list[int]:
    """The first `count` option positions of the book (by conid) become active strategy legs."""
    registry = StrategyRegistry(kit.root)
    options = sorted(
        (p.contract for p in sim.book.positions.values() if p.contract.sec_type == "OPT"),
        key=lambda c: c.conid,
    )[:count]
    for c in options:
        registry.add_active(c.conid, c.symbol, c.right, c.strike, c.expiry, 1)
    return [c.conid for c in options]


def non_leg_options(sim: SimulatorThread, legs: list[int], count: int) -> list[int]:
    conids = sorted({p.contract.conid for p in sim.book.positions.values() if p.contract.sec_type == "OPT"})
    return [c for c in conids if c not in set(legs)][:count]


@contextlib.asynccontextmanager
async def bot(sim: SimulatorThread, client_id: int = BOT_ID, **connect):
    """The trader's bot: ib_async with its defaults unless told otherwise (it takes account updates)."""
    ib = IB()
    await ib.connectAsync("127.0.0.1", sim.port, clientId=client_id, timeout=10, **connect)
    try:
        yield ib
    finally:
        ib.disconnect()


def hold_lines(trader: IB, conids: list[int]) -> None:
    """The bot streams `conids` (one line each)."""
    for conid in conids:
        trader.reqMktData(Contract(conId=conid, exchange="SMART"))


def free_lines(trader: IB) -> None:
    """The bot cancels every stream it holds."""
    for ticker in list(trader.tickers()):
        trader.cancelMktData(ticker.contract)


def lines_of(sim: SimulatorThread, client_id: int) -> int:
    return int(sim.stats()["lines_by_client"].get(str(client_id), 0))


def errors_to(sim: SimulatorThread, client_id: int, code: int) -> int:
    return int(sim.stats()["errors_by_client"].get(str(client_id), {}).get(str(code), 0))


@dataclass(slots=True)
class Sample:
    at: float
    stream_lines: int  # at the gateway
    refused: int  # 101s the gateway sent the stream so far
    probes: int  # the stream's own counters
    probes_won: int


@dataclass(slots=True)
class LineWatch:
    """Samples the gateway's lines and 101s and the stream's probe counters every `every` seconds."""

    sim: SimulatorThread
    streamer: PositionStreamer
    every: float = 0.1
    samples: list[Sample] = field(default_factory=list)

    def sample(self) -> Sample:
        stats = self.sim.stats()
        status = self.streamer.status()
        by_client = stats["lines_by_client"]
        taken = Sample(
            time.monotonic(),
            int(by_client.get(str(STREAM_ID), 0)),
            int(stats["errors_by_client"].get(str(STREAM_ID), {}).get("101", 0)),
            status.probes,
            status.probes_won,
        )
        self.samples.append(taken)
        return taken

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)

    def most_101s_within(self, seconds: float) -> int:
        """The most 101s the stream got in any window of `seconds` (a burst shows here)."""
        most = 0
        for i, first in enumerate(self.samples):
            before = self.samples[i - 1].refused if i else 0
            inside = [s.refused for s in self.samples[i:] if s.at - first.at <= seconds]
            most = max(most, inside[-1] - before)
        return most

    def most_stream_lines(self, since: float, until: float) -> int:
        return max(s.stream_lines for s in self.samples if since <= s.at <= until)


@contextlib.asynccontextmanager
async def watching(sim: SimulatorThread, streamer: PositionStreamer):
    watch = LineWatch(sim, streamer)
    stop = asyncio.Event()
    task = asyncio.create_task(watch.run(stop))
    try:
        yield watch
    finally:
        stop.set()
        await task
        watch.sample()
