"""Bounded polls: the one way tests wait for something another thread or process does (never a fixed sleep).

Both return the probe's first truthy value, or fail naming what was awaited and the last value seen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T],
    timeout: float = 10.0,
    what: str = "",
    *,
    every: float = 0.2,
    tolerate: tuple[type[Exception], ...] = (),
) -> T:
    """Call `probe` every `every` seconds until it returns something truthy. Exceptions of the types in
    `tolerate` count as "not yet" (a service still starting); others propagate at once."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except tolerate as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(timeout, what or probe, last))
        time.sleep(every)


async def wait_until(
    probe: Callable[[], T], timeout: float = 10.0, what: str = "", *, every: float = 0.02
) -> T:
    """`wait_for` for coroutines: polls without blocking the event loop the awaited work runs on."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(timeout, what or probe, value))
        await asyncio.sleep(every)


def _timed_out(timeout: float, what: object, last: object) -> str:
    return f"timed out after {timeout:g}s waiting for {what}; last seen: {last!r}"
