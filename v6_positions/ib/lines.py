"""How many lines IB grants the stream right now, learned from 101s and won back by probing.

Lines are account-wide: the trader's bot, TWS and the phone app hold them too, so IB may grant fewer than the
configured budget (`V6_MAX_LINES - V6_RESERVED_LINES`). A 101 means "the account is full now": the grant is
capped at the lines the stream holds, and the legs that do not fit wait in the queue at top priority. While
capped, one probe at a time asks for one more line: a probe that gets data raises the cap by one and the next
probe follows at once (freed lines are won back one round trip each); a probe that gets 101 backs off
exponentially (capped at `probe_cap_s` = 15 s, so freed lines are noticed within ~18 s). Never a burst.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from v6_positions.ib.backoff import Backoff

# Freed lines must be found again within ~30 s: the longest wait between two probes (plus jitter) stays below.
PROBE_BASE_S = 1.0
PROBE_CAP_S = 15.0


@dataclass(slots=True)
class LineGrant:
    """The effective line limit: min(configured budget, what IB granted so far)."""

    configured: int
    probe_base_s: float = PROBE_BASE_S
    probe_cap_s: float = PROBE_CAP_S
    clock: Callable[[], float] = time.monotonic
    rng: random.Random | None = None
    cap: int | None = None  # None: IB never refused, the configured budget applies
    probing: bool = False  # the one extra line of a probe is in the limit until confirmed or refused
    probe_at: float = 0.0
    rejections: int = 0
    probes: int = 0
    probes_won: int = 0
    _backoff: Backoff = field(init=False)

    def __post_init__(self) -> None:
        self._backoff = Backoff(self.probe_base_s, self.probe_cap_s, 0.2, self.rng)

    @property
    def limit(self) -> int:
        """Lines the router may hand out now (the probe's extra line included)."""
        if self.cap is None:
            return self.configured
        return min(self.configured, self.cap + (1 if self.probing else 0))

    @property
    def capped(self) -> bool:
        return self.cap is not None

    def refused(self, lines_held: int) -> None:
        """IB answered 101 while we hold `lines_held` (the refused request not counted)."""
        self.rejections += 1
        self.cap = min(lines_held, self.configured)
        self.probing = False
        self.probe_at = self.clock() + self._backoff.next_delay()

    def granted(self, lines_held: int) -> None:
        """A new stream got data while we hold `lines_held` lines: IB grants at least that many."""
        if self.cap is None or lines_held <= self.cap:
            return
        if self.probing:
            self.probes_won += 1
        self.probing = False
        self._backoff.reset()
        self.probe_at = self.clock()  # the next probe may follow at once
        self.cap = None if lines_held >= self.configured else lines_held

    def start_probe(self) -> bool:
        """Called when legs wait for lines: True when a probe starts now (the limit grows by one)."""
        if self.cap is None or self.probing or self.cap >= self.configured or self.clock() < self.probe_at:
            return False
        self.probing = True
        self.probes += 1
        return True

    def abandon_probe(self) -> None:
        """The probe's leg went away (deactivated, closed) before IB answered: no verdict."""
        self.probing = False

    def seconds_to_probe(self) -> float | None:
        if self.cap is None or self.probing:
            return None
        return max(0.0, self.probe_at - self.clock())
