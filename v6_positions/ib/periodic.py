"""The wait of every periodic loop of the stream: sleep an interval, or end at once when asked to stop."""

from __future__ import annotations

import asyncio


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds`; True when `stop` was set meanwhile (the loop ends), False when the time is up."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
        return True
    except TimeoutError:
        return False
