"""How positions show in the log: one summary line per connect instead of ib_async's line per position.

ib_async's wrapper logs every position message at INFO ("position: Position(...)"): a connect replays the
whole account (2,000 lines for a 2,000-position account), and every resync replays it again. Those lines, and
only those, are dropped by a filter on ib_async's wrapper logger; its other lines (farm status, errors) pass.
The session logs the summary instead: how many positions each account holds.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

from ib_async import Position

IB_WRAPPER_LOGGER = "ib_async.wrapper"
_POSITION_LINE = "position: "  # how ib_async's Wrapper.position words its line


class PositionLinesFilter(logging.Filter):
    """Drops ib_async's per-position INFO lines; every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno <= logging.INFO
            and isinstance(record.msg, str)
            and record.msg.startswith(_POSITION_LINE)
        )


def quiet_position_lines() -> None:
    """Install the filter on ib_async's wrapper logger (the logger is process-wide; installed once)."""
    logger = logging.getLogger(IB_WRAPPER_LOGGER)
    if not any(isinstance(f, PositionLinesFilter) for f in logger.filters):
        logger.addFilter(PositionLinesFilter())


def positions_summary(positions: Iterable[Position], managed_accounts: Iterable[str] = ()) -> str:
    """`216 (DU1000001 216)`: non-zero positions in all, then per account; a managed account without
    positions shows 0."""
    counts = Counter({account: 0 for account in managed_accounts})
    counts.update(p.account for p in positions if p.position != 0)
    per_account = ", ".join(f"{account} {count}" for account, count in sorted(counts.items()))
    return f"{counts.total()} ({per_account or 'no account'})"
