"""The one ledger of the stream's market-data lines: who holds each line, and how many IB grants.

Lines are account-wide: the trader's bot, TWS and the phone app hold them too, so IB may grant fewer than the
configured budget (`V6_MAX_LINES - V6_RESERVED_LINES`). Every line the stream takes — a long-lived stream
(`STREAM`), a line of the rotating pool (`POOL`), the probe — is taken here before its request goes out and
given back here when it is cancelled, refused or lost: the count of lines held is one number, and the split
between long-lived lines and the pool (`split`) is derived from it.

What IB grants: the configured budget until a 101 ("the account is full now") caps the grant at the lines
IB held for the stream. While capped, a line beyond the grant is a probe: at most one is outstanding, whoever
takes it (the split gives it to a long-lived stream; a pool line may reach it first). A probe
that gets data raises the grant by one and the next may follow at once (freed lines come back one round trip
each); a probe refused with 101, or given up before IB answered, counts as tried and the next waits the
backoff (1 s doubling to `probe_cap_s` = 15 s, +-20 %: freed lines are noticed within ~18 s). Any line that
gets data is evidence like a probe. IB answers each client's requests in order, so when it answers a request
the lines it holds for the stream are exactly those taken before it and not refused: a line's data proves a
grant of that many plus one, and its 101 a grant of that many (lines given back meanwhile do not lower it;
if another client took them, the next request finds out). The owner is called back
(`watch`) when the grant or the probe changes, and when a line frees up that a long-lived stream waits for.
One log line per state change (capped, grant raised, back to the budget), never one per probe.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from v6_positions.ib.connection.backoff import Backoff

log = logging.getLogger(__name__)

# Freed lines must be found again within ~30 s: the longest wait between two probes (plus jitter) stays below.
PROBE_BASE_S = 1.0
PROBE_CAP_S = 15.0

STREAM = "stream"  # a long-lived stream (`lines/subscriptions.py`)
POOL = "pool"  # a line of the rotating pool (`lines/pool.py`)

LineKey = tuple[str, int]  # (holder, conid)


@dataclass(slots=True)
class LedgerStats:
    """The stream's lines as its status shows them."""

    held: int  # lines held at IB: long-lived streams, the pool's and the probe's
    configured: int  # the line budget (V6_MAX_LINES - V6_RESERVED_LINES)
    cap: int | None  # lines IB granted after a 101 (None: never refused, the budget applies)
    rejections: int  # 101s
    probes: int
    probes_won: int


@dataclass(slots=True)
class _Line:
    seq: int  # order taken
    before: int  # lines held when it was taken, less those IB refused since (IB held them all at its answer)
    confirmed: bool = False  # IB sent data on it


@dataclass(slots=True)
class LineLedger:
    configured: int
    probe_base_s: float = PROBE_BASE_S
    probe_cap_s: float = PROBE_CAP_S
    clock: Callable[[], float] = time.monotonic
    rng: random.Random | None = None
    cap: int | None = None  # None: IB never refused, the configured budget applies
    probe_at: float = 0.0  # no probe before this
    rejections: int = 0  # 101s
    probes: int = 0
    probes_won: int = 0
    _held: dict[LineKey, _Line] = field(default_factory=dict)  # in the order taken
    _taken: int = 0  # lines taken so far (orders them)
    _probe: LineKey | None = None  # the line beyond the grant, until IB answers
    _stream_waits: bool = False  # a long-lived stream found no line free
    _watchers: list[Callable[[], None]] = field(default_factory=list)
    _backoff: Backoff = field(init=False)

    def __post_init__(self) -> None:
        if self.configured <= 0:
            raise ValueError(f"configured={self.configured!r}: the line budget must be > 0")
        self._backoff = Backoff(self.probe_base_s, self.probe_cap_s, 0.2, self.rng)

    # -- what is held and granted ------------------------------------------------------------------------
    @property
    def held(self) -> int:
        return len(self._held)

    def stats(self) -> LedgerStats:
        return LedgerStats(
            self.held, self.configured, self.cap, self.rejections, self.probes, self.probes_won
        )

    @property
    def granted(self) -> int:
        """Lines IB grants the stream as far as it knows: the budget, or the cap after a 101."""
        return self.configured if self.cap is None else min(self.cap, self.configured)

    @property
    def capped(self) -> bool:
        return self.cap is not None

    @property
    def probing(self) -> bool:
        return self._probe is not None

    def is_probe(self, holder: str, conid: int) -> bool:
        return self._probe == (holder, conid)

    def probe_due(self) -> bool:
        return self._probe is None and self.granted < self.configured and self.clock() >= self.probe_at

    @property
    def limit(self) -> int:
        """Lines the stream may hold now: the grant, plus the probe's line while one is due or outstanding."""
        return min(self.configured, self.granted + (1 if self.probing or self.probe_due() else 0))

    def can_take(self) -> bool:
        return self.held < self.granted or (self.held == self.granted and self.probe_due())

    def split(self, wanting: int, pool_max: int) -> tuple[int, int]:
        """(long-lived lines, pool lines) for `wanting` legs: all long-lived when they fit the limit; else a
        pool of at most `pool_max` lines, half the grant, and the legs beyond the grant (a pool line never
        serves fewer than two legs), and the riskiest legs keep the rest. The pool is sized on the grant,
        so the probe's line is always a long-lived stream: a won probe never moves a stream to the pool."""
        limit, granted = self.limit, self.granted
        if wanting <= limit or pool_max <= 0 or granted < 2:
            return limit, 0
        pool = min(pool_max, granted // 2, wanting - granted)
        return limit - pool, pool

    def seconds_to_probe(self) -> float | None:
        """Seconds until the next probe may start; None when none waits (uncapped, or one outstanding)."""
        if self._probe is not None or self.granted >= self.configured:
            return None
        return max(0.0, self.probe_at - self.clock())

    def watch(self, callback: Callable[[], None]) -> None:
        """`callback()` when the grant or the probe changes, or a line a long-lived stream waits for frees."""
        self._watchers.append(callback)

    # -- lines taken and given back ------------------------------------------------------------------------
    def take(self, holder: str, conid: int) -> bool:
        """Before a request goes out: True when a line is free for it (beyond the grant, as the probe)."""
        key = (holder, conid)
        if key in self._held:
            return True
        if self.held < self.granted:
            self._held[key] = self._new_line()
            return True
        if self.held == self.granted and self.probe_due():
            self._held[key] = self._new_line()
            self._probe = key
            self.probes += 1
            log.debug("probing IB for one more line: %s conid=%s (holding %d)", holder, conid, self.held - 1)
            return True
        if holder == STREAM:
            self._stream_waits = True
        return False

    def confirm(self, holder: str, conid: int) -> None:
        """IB sent data (or accepted the request) on this line: it is held, and IB grants at least the lines
        held before it, plus it."""
        key = (holder, conid)
        line = self._held.get(key)
        if line is None or line.confirmed:
            return
        line.confirmed = True
        changed = False
        if key == self._probe:
            self._probe = None
            self.probes_won += 1
            self._backoff.reset()
            self.probe_at = self.clock()  # a line was free: the next may be too
            changed = True
        proven = line.before + 1
        if self.cap is not None and proven > self.cap:
            if proven >= self.configured:
                self.cap = None
                log.info("IB grants the configured %d lines again", self.configured)
            else:
                self.cap = proven
                log.info("IB grants %d lines now (of a budget of %d)", proven, self.configured)
            changed = True
        if changed:
            self._notify()

    def refuse(self, holder: str, conid: int) -> None:
        """101 on this line's request: no line is held, the account is full now: cap at what is held."""
        key = (holder, conid)
        line = self._held.pop(key, None)
        if key == self._probe:
            self._probe = None
        if line is not None:  # IB held none for it: the lines taken after it had one fewer before them
            for other in self._held.values():
                if other.seq > line.seq:
                    other.before -= 1
        self.rejections += 1
        before = self.cap
        self.cap = min(self.held if line is None else line.before, self.configured)
        self.probe_at = self.clock() + self._backoff.next_delay()
        if before is None or self.cap < before:
            log.warning(
                "account full at IB (101): this stream holds %d lines of its budget of %d; probing for "
                "more, one at a time, backing off up to %.0fs", self.cap, self.configured, self.probe_cap_s,
            )
        else:
            log.debug("probe refused (101); next in %.1fs", self.probe_at - self.clock())
        self._notify()

    def release(self, holder: str, conid: int) -> None:
        """The line was cancelled (or never reached IB): free again. A probe given up before IB answered
        counts as tried."""
        key = (holder, conid)
        if self._held.pop(key, None) is None:
            return
        if key == self._probe:
            self._probe = None
            self.probe_at = self.clock() + self._backoff.next_delay()
            log.debug("probe given up before IB answered; next in %.1fs", self.probe_at - self.clock())
            self._notify()
        elif self._stream_waits:
            self._stream_waits = False
            self._notify()

    def release_all(self, holder: str) -> None:
        """The connection dropped (or IB's 1101): none of `holder`'s lines is held any more."""
        keys = [key for key in self._held if key[0] == holder]
        for key in keys:
            del self._held[key]
        if self._probe is not None and self._probe[0] == holder:
            self._probe = None
            self.probe_at = self.clock() + self._backoff.next_delay()
        if keys:
            self._stream_waits = False
            self._notify()

    def _new_line(self) -> _Line:
        self._taken += 1
        return _Line(self._taken, self.held)

    def _notify(self) -> None:
        for callback in self._watchers:
            callback()


class RefusalLinesFilter(logging.Filter):
    """Drops ib_async's ERROR line for each 101 ("Error 101, reqId N: Max number of tickers ..."): a refused
    probe is no news, and the ledger logs each change of the grant itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(_REFUSAL_LINE))


_REFUSAL_LINE = "Error 101, "  # how ib_async's Wrapper.error words a 101
_IB_WRAPPER_LOGGER = "ib_async.wrapper"


def quiet_refusal_lines() -> None:
    """Install the filter on ib_async's wrapper logger (process-wide; installed once)."""
    logger = logging.getLogger(_IB_WRAPPER_LOGGER)
    if not any(isinstance(f, RefusalLinesFilter) for f in logger.filters):
        logger.addFilter(RefusalLinesFilter())


def standalone_ledger() -> LineLedger:
    """A ledger for a holder used on its own (unit tests, benches): bounded only by what IB grants."""
    return LineLedger(configured=1_000_000)
