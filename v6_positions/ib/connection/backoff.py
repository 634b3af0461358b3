"""Exponential backoff with jitter: reconnects (`session.py`) and line probes (`lines/ledger.py`)."""

from __future__ import annotations

import random


class Backoff:
    """Delay before the n-th retry: base * 2**n, capped, times (1 +- jitter)."""

    def __init__(self, base_s: float, cap_s: float, jitter: float = 0.2, rng: random.Random | None = None):
        self.base_s, self.cap_s, self.jitter = base_s, cap_s, jitter
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        raw = min(self.cap_s, self.base_s * (2**self.attempt))
        self.attempt += 1
        return max(0.0, raw * (1.0 + self._rng.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        self.attempt = 0
