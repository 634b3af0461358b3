"""Fixtures of the streaming-leg tests: every simulator is checked for orders (must stay 0) at teardown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from polling import wait_until

from v6_positions.commands.launch import register_demo_legs
from v6_positions.config import Settings
from v6_positions.ib.connection.session import SessionConfig
from v6_positions.ib.rows.handlers import DeltaLakePositionWriter
from v6_positions.ib.streamer import PositionStreamer
from v6_positions.lake import HistoryWriter, PositionQueue, StrategyRegistry, read_table
from v6_positions.simulator import SimulatorThread, load_book


@pytest.fixture
def sim(sim):  # the root fixture, plus the read-only check after every test
    yield sim
    assert sim.stats()["orders_received"] == 0


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimulatorThread]]:
    started: list[SimulatorThread] = []

    def start(book: str = "demo", **kwargs) -> SimulatorThread:
        kwargs.setdefault("portfolio_interval", 2.0)
        running = SimulatorThread(load_book(book), **kwargs)
        running.start()
        started.append(running)
        return running

    yield start
    for running in started:
        try:
            assert running.stats()["orders_received"] == 0
        finally:
            running.stop()


class Kit:
    """Builds streamers against a simulator and a temp lake; async helpers wait on bounded polls."""

    def __init__(self, lake_root: str) -> None:
        self.root = lake_root
        self.writers: list[HistoryWriter] = []

    def settings(self, port: int, **overrides) -> Settings:
        # The users' defaults (the rotating pool on); a test that turns a feature off says why.
        return replace(Settings(lake_uri=self.root, ib_port=port, flush_interval_s=0.3), **overrides)

    def register_demo_legs(self, sim: SimulatorThread, count: int | None = None) -> list[int]:
        return register_demo_legs(self.root, book=sim.book, count=count)

    def streamer(self, settings: Settings, *, handlers=None, **kwargs) -> PositionStreamer:
        writer = HistoryWriter(self.root, flush_interval_s=settings.flush_interval_s)
        self.writers.append(writer)
        kwargs.setdefault("registry_poll_s", 0.3)
        kwargs.setdefault("queue_flush_s", 0.3)
        kwargs.setdefault(
            "session_config",
            replace(
                SessionConfig.from_settings(settings), backoff_base_s=0.2, backoff_cap_s=1.0,
                heartbeat_interval_s=1.0, heartbeat_timeout_s=2.0, connect_timeout_s=3.0,
                client_id_retry_base_s=0.2, client_id_retry_cap_s=1.0,
            ),
        )
        all_handlers = [DeltaLakePositionWriter(writer), *(handlers or [])]
        return PositionStreamer(settings, StrategyRegistry(self.root), PositionQueue(self.root), all_handlers,
                                **kwargs)

    def table(self, name: str):
        return read_table(self.root, name)

    def queue(self) -> PositionQueue:
        return PositionQueue(self.root)

    @staticmethod
    async def until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
        await wait_until(predicate, timeout, what, every=0.05)

    @staticmethod
    @contextlib.asynccontextmanager
    async def running(streamer: PositionStreamer):
        stop = asyncio.Event()
        task = asyncio.create_task(streamer.run(stop))
        try:
            yield stop
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


@pytest.fixture
def kit(lake_root: str) -> Kit:
    return Kit(lake_root)
