"""How many streaming market-data lines this process may hold.

`Settings.budget` builds the one `LineBudget` of a process from V6_MAX_LINES / V6_RESERVED_LINES; nothing
else subtracts the reserve again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class LineBudget:
    """IB's per-account line limit minus the lines kept free for other clients (TWS, mobile, other bots)."""

    max_lines: int = 100
    reserved: int = 0

    def __post_init__(self) -> None:
        if self.max_lines <= 0:
            raise ValueError(f"max_lines={self.max_lines!r}: must be > 0")
        if not 0 <= self.reserved < self.max_lines:
            raise ValueError(f"reserved={self.reserved!r}: must be >= 0 and below max_lines={self.max_lines}")

    @property
    def available(self) -> int:
        return self.max_lines - self.reserved
