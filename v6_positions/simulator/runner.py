"""SimulatorThread: the simulator and its control API on a background thread, driven synchronously."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from v6_positions.simulator.book import Book, Quirks
from v6_positions.simulator.control import ControlServer
from v6_positions.simulator.server import GatewaySimulator

T = TypeVar("T")
CALL_TIMEOUT_S = 30.0


class SimulatorThread:
    """`with SimulatorThread(book, max_lines=100) as sim: ...` — every method is synchronous and thread-safe
    (each runs on the simulator's own loop)."""

    def __init__(
        self, book: Book, *, control_port: int = 0, control_host: str = "127.0.0.1", **sim_kwargs: Any
    ) -> None:
        self._book = book
        self._sim_kwargs = sim_kwargs
        self._control_host = control_host
        self._control_port = control_port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.sim: GatewaySimulator | None = None
        self.control: ControlServer | None = None

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gateway-simulator", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"simulator failed to start: {self._error}") from self._error
        if not self._ready.is_set():
            raise RuntimeError("simulator did not start within 30 s")

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.sim = GatewaySimulator(self._book, **self._sim_kwargs)
            await self.sim.start()
            self.control = ControlServer(self.sim, self._control_host, self._control_port)
            await self.control.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            if self.sim is not None:
                await self.sim.stop()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.control.stop()
            await self.sim.stop()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, "simulator thread not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_S)

    async def _sync(self, fn: Any, *args: Any) -> Any:
        return fn(*args)

    # ---- the sim's API, synchronously ---------------------------------------------------------------------
    @property
    def _running(self) -> GatewaySimulator:
        assert self.sim is not None, "simulator thread not started"
        return self.sim

    @property
    def port(self) -> int:
        return self._running.port

    @property
    def host(self) -> str:
        return self._running.host

    @property
    def control_port(self) -> int:
        assert self.control is not None
        return self.control.port

    @property
    def book(self) -> Book:
        return self._book

    def stats(self) -> dict[str, Any]:
        return self._call(self._sync(self._running.stats))

    def reset_stats(self) -> None:
        self._call(self._sync(self._running.reset_stats))

    def disconnect_all(self) -> int:
        return self._call(self._running.disconnect_all())

    def restart(self, down_seconds: float) -> None:
        self._call(self._running.restart(down_seconds))

    def wait_accepting(self, timeout: float = 10.0) -> None:
        self._call(self._running.wait_accepting(timeout))

    def connectivity(self, code: int) -> None:
        self._call(self._running.connectivity(code))

    def set_position(
        self, account: str, conid: int, position: float, avg_cost: float | None = None, **contract: Any
    ) -> None:
        self._call(self._running.set_position(account, conid, position, avg_cost, **contract))

    def hold_lines(self, lines: int) -> None:
        """Lines held outside the API (TWS watchlists, the phone app); 0 frees them."""
        self._call(self._running.hold_lines(lines))

    def set_client_id_linger(self, seconds: float) -> None:
        """From now on a closed socket keeps its clientId (326 for others) and its lines `seconds` long."""
        self._call(self._running.set_client_id_linger(seconds))

    def hold_client_id(self, client_id: int, seconds: float) -> None:
        """`client_id` is in use (326) for `seconds`, with no socket; 0 releases it."""
        self._call(self._running.hold_client_id(client_id, seconds))

    def competing_session(self, active: bool) -> None:
        """10197 to every stream and no ticks while active."""
        self._call(self._running.set_competing_session(active))

    def set_quirks(self, conid: int, **fields: Any) -> Quirks:
        """one_sided, stale_last, data_warning (10090/10091/None), missing_greeks (list of names)."""
        return self._call(self._running.set_quirks(conid, **fields))

    def set_quote_latency(self, low: float, high: float) -> None:
        """First ticks of each new subscription come a seeded uniform [low, high] s after reqMktData."""
        self._call(self._running.set_quote_latency(low, high))

    def ticks_in_flight_at_cancel(self, active: bool) -> None:
        """Each cancel of a quoting stream reaches the client after one more cycle of its ticks."""
        self._call(self._running.set_ticks_in_flight_at_cancel(active))
