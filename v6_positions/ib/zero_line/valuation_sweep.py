"""Zero-line valuations of queued holdings: a paced reqPnLSingle sweep (subscribe, first answer, cancel).

Why not reqAccountUpdates: IB serves account updates to one client per gateway, and a new subscriber takes
them from the old one (2100). The trader's bot usually wants them, and a stream that depends on them freezes
the queue's payloads the moment the bot connects. reqPnLSingle is per (account, conid), multi-client, uses
no market-data line, and its `value` is IB's own market value (the marking IB uses for the portfolio).

Pacing: IB allows 50 messages/s; each valuation costs two (request + cancel), so `per_second` requests leave
every second with room for the stream's own traffic. A sweep of 2,000 queued holdings at 15/s takes ~2 min,
close to the 3-minute cadence of IB's portfolio pushes it replaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ib_async import IB, PnLSingle

from v6_positions.ib.account.holdings import HoldingKey

log = logging.getLogger(__name__)

PER_SECOND = 15
ANSWER_TIMEOUT_S = 10.0


@dataclass(slots=True)
class SweepStats:
    sweeps: int = 0
    requested: int = 0
    answered: int = 0
    missing: int = 0  # no answer, an error, or IB's "not computed" value: logged, counted, never invented
    last_sweep_started_at: float | None = None  # time.monotonic()
    last_sweep_s: float | None = None
    last_missing: tuple[HoldingKey, ...] = ()


class ValuationSweep:
    def __init__(
        self,
        ib: IB,
        keys: Callable[[], Sequence[HoldingKey]],
        on_value: Callable[[HoldingKey, PnLSingle], bool],  # True when the answer held a usable value
        ready: Callable[[], bool],
        *,
        interval_s: float = 60.0,
        per_second: int = PER_SECOND,
        answer_timeout_s: float = ANSWER_TIMEOUT_S,
    ) -> None:
        self.ib = ib
        self._keys = keys
        self._on_value = on_value
        self._ready = ready
        self.interval_s = interval_s
        self.per_second = max(1, per_second)
        self.answer_timeout_s = answer_timeout_s
        self._stats = SweepStats()
        self._kick = asyncio.Event()

    def stats(self) -> SweepStats:
        return replace(self._stats)

    def kick(self) -> None:
        """Sweep now (after a resync) instead of waiting for the interval."""
        self._kick.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.interval_s)
            self._kick.clear()
            if stop.is_set() or not self._ready():
                continue
            try:
                await self.sweep_once()
            except Exception:  # one failed sweep must not end valuations for the whole run
                log.exception("valuation sweep failed; next one in %.0fs", self.interval_s)

    async def sweep_once(self) -> int:
        """Value every key once, `per_second` at a time. Returns how many got a value."""
        keys = list(dict.fromkeys(self._keys()))
        started = time.monotonic()
        self._stats.last_sweep_started_at = started
        answered_total = 0
        missing: list[HoldingKey] = []
        loop = asyncio.get_running_loop()
        for start in range(0, len(keys), self.per_second):
            if not self._ready():
                log.info("valuation sweep interrupted (not connected) after %d of %d", start, len(keys))
                break
            chunk_started = loop.time()
            got, lost = await self._value_chunk(keys[start:start + self.per_second])
            answered_total += got
            missing.extend(lost)
            await asyncio.sleep(max(0.0, chunk_started + 1.0 - loop.time()))  # <= per_second per second
        self._stats.sweeps += 1
        self._stats.answered += answered_total
        self._stats.missing += len(missing)
        self._stats.last_missing = tuple(missing)
        self._stats.last_sweep_s = time.monotonic() - started
        if missing:
            sample = ", ".join(f"{account}/{conid}" for account, conid in missing[:5])
            log.warning("valuation sweep: no value from IB for %d of %d queued holdings (%s%s)",
                        len(missing), len(keys), sample, ", ..." if len(missing) > 5 else "")
        else:
            log.debug("valuation sweep: %d queued holdings valued in %.1fs", len(keys),
                      self._stats.last_sweep_s)
        return answered_total

    async def _value_chunk(self, chunk: Sequence[HoldingKey]) -> tuple[int, list[HoldingKey]]:
        ib = self.ib
        pending: dict[int, HoldingKey] = {}  # reqId -> key
        answered: dict[HoldingKey, bool] = {}  # key -> got a usable value
        wake = asyncio.Event()

        def on_pnl(pnl: PnLSingle) -> None:
            key = (pnl.account, int(pnl.conId))
            if key in answered or key not in chunk_set:
                return
            answered[key] = bool(self._on_value(key, pnl))
            wake.set()

        def on_error(req_id: int, code: int, message: str, contract: object = None) -> None:
            key = pending.get(req_id)
            if key is not None and key not in answered:
                log.warning("valuation of conid=%s (%s) refused: %s %s", key[1], key[0], code, message)
                answered[key] = False
                wake.set()

        chunk_set = set(chunk)
        ib.pnlSingleEvent += on_pnl
        ib.errorEvent += on_error
        try:
            for account, conid in chunk:
                if (account, "", conid) in ib.wrapper.pnlSingleKey2ReqId:
                    continue  # someone in this process already follows it: its events reach on_pnl too
                ib.reqPnLSingle(account, "", conid)
                pending[ib.wrapper.pnlSingleKey2ReqId[(account, "", conid)]] = (account, conid)
                self._stats.requested += 1
            deadline = time.monotonic() + self.answer_timeout_s
            while len(answered) < len(chunk_set) and time.monotonic() < deadline and self._ready():
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), max(0.0, deadline - time.monotonic()))
        finally:
            ib.pnlSingleEvent -= on_pnl
            ib.errorEvent -= on_error
            if self._ready():
                for key in pending.values():
                    ib.cancelPnLSingle(key[0], "", key[1])  # first answer is all we need: free the request
        got = sum(1 for ok in answered.values() if ok)
        lost = [key for key in chunk if not answered.get(key)]
        return got, lost
