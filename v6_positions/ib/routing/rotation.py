"""The line scheduler for more active legs than lines: long-lived lines for the riskiest, a rotating pool for
the rest, paced under IB's 50 messages/s, with a staleness bound every overflow leg is kept within.

A state machine with an injected clock and no I/O: the streamer tells it what happened (`set_legs`,
`set_budget`, `on_quote`, `on_refused`, `unsent`) and applies the `Action`s that `poll()` returns (reqMktData,
cancelMktData). Call `poll()` after each event and at least every 100 ms.

- Lines. `budget` = lines the stream may hold for active legs now (the coexistence budget). When every active
  leg fits, all of them are long-lived and there is no pool. Otherwise the pool takes `pool_lines()` of them
  (the floor `V6_ROTATION_LINES`, or more when the message rate could keep more lines busy) and the riskiest
  `budget - pool` legs stay long-lived. Lines held never exceed the budget: a subscribe is only issued when
  one more line still fits, so rotation itself can never cause a 101; when the budget shrinks, lines are
  cancelled (pool first, then the least risky long-lived legs).
- Rotation. An overflow leg is subscribed, kept until a usable quote arrives (`on_quote`), then its line goes
  to the next leg: the cancel and the next subscribe are sent together, so pool lines are never left idle for
  another client to take mid-rotation. The next leg is the one whose newest quote is oldest (never-quoted
  legs first, riskiest first), so every overflow leg is visited once per cycle: that is what bounds its age.
  A leg that gets no quote within `quote_timeout_s` is cancelled and retried after the others.
- Pacing. Every subscribe and cancel is one message to IB; they are drawn from a token bucket of `msg_rate`
  per second (default 20 of IB's 50: the stream's other requests keep the rest), with `reserve` tokens kept
  back for cancels so a deactivated leg leaves at once even while rotation runs flat out. Within any second
  this scheduler sends at most `burst + msg_rate` messages (30 by default).
- Promotion. Long-lived membership follows the scores with hysteresis: a rotating leg takes a long-lived line
  from the weakest long-lived leg only when its score beats it by `promote_ratio`, at most every
  `rebalance_interval_s`; a leg whose score jumps or a grown budget promotes it. A deactivated leg is
  forgotten at once: its line, long-lived or rotating, is cancelled in the same `poll()`.
- Bound. `bound_s()` = cycle time of the overflow set + quote latency + flush interval, where the cycle time
  is overflow legs / (rotation rate x `rate_margin`), the rotation rate = min(pool lines / quote latency,
  msg_rate / 2), and `rate_margin` (0.9) allows for the event loop's lag and the bucket's granularity;
  when the rate achieved over the last `rate_window_s` is lower (a loaded machine, a slow gateway), that is
  used instead: the bound reports what is achieved. The quote latency is the 95th percentile of the last
  `latency_samples` observed subscribe-to-quote times.

Pacing, roles, rotation and the bound stay in one module because they are one pure state machine: all of them
read and write the same slots, and they are tested as one.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

IB_MSG_RATE = 50  # IB's messages per second per client


class Role(Enum):
    LONG = "stream"  # holds a long-lived line
    ROTATE = "rotate"  # shares the pool


class Line(Enum):
    NONE = "none"
    HELD = "held"  # subscribed; a line is taken from the subscribe on (IB counts it at once)


@dataclass(slots=True, frozen=True)
class Action:
    kind: str  # "subscribe" | "cancel"
    conid: int
    role: Role
    reason: str


@dataclass(slots=True, frozen=True)
class RotationConfig:
    floor_lines: int = 10  # V6_ROTATION_LINES: the pool's size at least, when legs overflow
    msg_rate: float = 20.0  # subscribe + cancel messages per second, all of this scheduler's
    burst: float = 10.0  # bucket capacity
    reserve: float = 4.0  # tokens kept back for cancels
    quote_timeout_s: float = 5.0
    retry_after_s: float = 5.0  # a timed-out leg waits this long before it may rotate again
    promote_ratio: float = 1.5
    rebalance_interval_s: float = 10.0
    flush_interval_s: float = 1.0  # rows are committed within this after the quote (the streamer's flush)
    default_latency_s: float = 0.3  # until quotes have been observed
    latency_samples: int = 200
    rate_window_s: float = 15.0  # the achieved rotation rate is measured over this window
    rate_margin: float = 0.9  # share of the theoretical rotation rate the bound counts on

    def __post_init__(self) -> None:
        if self.floor_lines < 0:
            raise ValueError(f"floor_lines={self.floor_lines}: must be >= 0 (V6_ROTATION_LINES)")
        if not 0 < self.msg_rate < IB_MSG_RATE:
            raise ValueError(f"msg_rate={self.msg_rate}: must be > 0 and below IB's {IB_MSG_RATE}/s")
        if self.burst < 2 or self.reserve < 1 or self.reserve >= self.burst:
            raise ValueError(
                f"burst={self.burst}, reserve={self.reserve}: need burst >= 2, 1 <= reserve < burst"
            )
        if self.msg_rate + self.burst >= IB_MSG_RATE:
            raise ValueError(
                f"msg_rate={self.msg_rate} + burst={self.burst}: must stay below IB's {IB_MSG_RATE}/s"
            )
        for name in ("quote_timeout_s", "retry_after_s", "rebalance_interval_s", "default_latency_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be > 0")
        if not 0 < self.rate_margin <= 1:
            raise ValueError(f"rate_margin={self.rate_margin}: must be > 0 and <= 1")
        if self.promote_ratio < 1:
            raise ValueError(f"promote_ratio={self.promote_ratio}: must be >= 1")


@dataclass(slots=True)
class LegSlot:
    conid: int
    score: float
    role: Role = Role.ROTATE
    line: Line = Line.NONE
    subscribed_at: float | None = None
    last_quote_at: float | None = None
    not_before: float = 0.0  # after a timeout: no rotation before this
    rotations: int = 0
    timeouts: int = 0


@dataclass(slots=True)
class LegStatus:
    conid: int
    score: float
    role: str
    line: str
    age_s: float | None  # None: never quoted
    rotations: int
    timeouts: int


@dataclass(slots=True)
class RotationSummary:
    legs: int
    budget: int
    long_lines: int
    pool_lines: int
    overflow: int  # legs without a long-lived line
    lines_held: int
    bound_s: float | None  # None when no leg rotates
    latency_p95_s: float
    msg_rate: float
    messages_sent: int
    rotations: int
    timeouts: int
    max_age_s: float | None


@dataclass(slots=True)
class _Bucket:
    rate: float
    capacity: float
    tokens: float
    at: float

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def take(self, keep: float) -> bool:
        """One token, if `keep` tokens remain after it."""
        if self.tokens - 1.0 >= keep:
            self.tokens -= 1.0
            return True
        return False


@dataclass(slots=True)
class RotationScheduler:
    config: RotationConfig
    clock: Callable[[], float]
    budget: int = 0
    legs: dict[int, LegSlot] = field(default_factory=dict)
    messages_sent: int = 0
    rotations: int = 0
    timeouts: int = 0
    _bucket: _Bucket | None = None
    _latencies: deque[float] = field(default_factory=deque)
    _last_rebalance: float = -math.inf
    _rebalance_now: bool = True
    _gone: list[LegSlot] = field(default_factory=list)  # deactivated, line not cancelled yet
    _done: list[LegSlot] = field(default_factory=list)  # rotating, quoted, line kept for the next leg
    _completions: deque[float] = field(default_factory=deque)  # when rotating legs got their quote
    _overflow_since: float | None = None

    def __post_init__(self) -> None:
        self._bucket = _Bucket(self.config.msg_rate, self.config.burst, self.config.burst, self.clock())

    # ---- what happened -------------------------------------------------------------------------------------
    def set_legs(self, scores: Mapping[int, float]) -> None:
        """The active legs to keep fresh and their risk scores (riskier = higher)."""
        for conid in [c for c in self.legs if c not in scores]:
            self._gone.append(self.legs.pop(conid))
            self._rebalance_now = True  # its long-lived line, if any, goes to the next riskiest
        for conid, score in scores.items():
            slot = self.legs.get(conid)
            if slot is None:
                self.legs[conid] = LegSlot(conid, float(score))
                self._rebalance_now = True
            else:
                slot.score = float(score)

    def set_budget(self, lines: int) -> None:
        """Lines the stream may hold for these legs now (0 or more)."""
        lines = max(0, int(lines))
        if lines != self.budget:
            self.budget = lines
            self._rebalance_now = True

    def on_quote(self, conid: int) -> None:
        """A usable quote for `conid` arrived (its row will be written)."""
        slot = self.legs.get(conid)
        if slot is None or slot.line is not Line.HELD:
            return
        now = self.clock()
        first = slot.subscribed_at is not None and not _quoted_since_subscribe(slot)
        if first and slot.subscribed_at is not None:
            self._note_latency(now - slot.subscribed_at)
        slot.last_quote_at = now
        if first and slot.role is Role.ROTATE:
            slot.rotations += 1
            self.rotations += 1
            self._completions.append(now)
            self._done.append(slot)  # its line goes to the next leg due

    def on_refused(self, conid: int) -> None:
        """IB refused the subscription (101, 200, ...): no line is held; the caller adjusts the budget."""
        slot = self.legs.get(conid)
        if slot is not None and slot.line is Line.HELD:
            slot.line = Line.NONE
            slot.subscribed_at = None
            slot.not_before = self.clock() + self.config.retry_after_s

    def unsent(self, conid: int) -> None:
        """The subscribe `poll()` just returned was not sent (no line free in the owner's ledger): no line is
        held and the message is not spent; the leg keeps its turn."""
        slot = self.legs.get(conid)
        if slot is not None and slot.line is Line.HELD:
            slot.line = Line.NONE
            slot.subscribed_at = None
        assert self._bucket is not None
        self._bucket.tokens = min(self._bucket.capacity, self._bucket.tokens + 1.0)
        self.messages_sent -= 1

    def forget(self, conid: int) -> bool:
        """Drop a leg at once because its owner takes it over (a long-lived stream); True when it held a line,
        which the caller cancels right away (counted here as one message)."""
        slot = self.legs.pop(conid, None)
        if slot is None:  # dropped by `set_legs` already, its line maybe not cancelled yet
            slot = next((s for s in self._gone if s.conid == conid), None)
            if slot is None:
                return False
            self._gone.remove(slot)
        self._rebalance_now = True
        if slot.line is Line.HELD:
            slot.line = Line.NONE
            self.messages_sent += 1
            return True
        return False

    def lines_lost(self) -> None:
        """The connection dropped (or IB's 1101): IB holds none of our lines any more."""
        for slot in self.legs.values():
            slot.line = Line.NONE
            slot.subscribed_at = None
        self._gone.clear()
        self._done.clear()

    def release_all(self) -> list[Action]:
        """Cancel every held line now (shutdown), unpaced: the connection closes right after."""
        actions = [
            Action("cancel", s.conid, s.role, "stopping") for s in self.legs.values() if s.line is Line.HELD
        ]
        actions += [Action("cancel", s.conid, s.role, "stopping") for s in self._gone if s.line is Line.HELD]
        self.lines_lost()
        self.messages_sent += len(actions)
        return actions

    # ---- what to do ----------------------------------------------------------------------------------------
    def poll(self) -> list[Action]:
        """The subscribes and cancels to send now, paced, never holding more lines than the budget."""
        now = self.clock()
        assert self._bucket is not None
        self._bucket.refill(now)
        if self.overflows():
            if self._overflow_since is None:
                self._overflow_since = now
        else:
            self._overflow_since = None
        actions: list[Action] = []
        for slot in self._gone:  # deactivated: leaves at once (the reserve pays for it)
            if slot.line is Line.HELD:
                self._cancel(slot, "deactivated", actions, force=True)
        self._gone.clear()
        if self._rebalance_now or now - self._last_rebalance >= self.config.rebalance_interval_s:
            self._rebalance(now)
        # quoted rotating legs keep their line until it goes to the next leg (promoted ones keep it for good)
        self._done = [
            s for s in self._done
            if s.line is Line.HELD and s.role is Role.ROTATE and self.legs.get(s.conid) is s
        ]
        for slot in self.legs.values():
            if (
                slot.role is Role.ROTATE
                and slot.line is Line.HELD
                and slot.subscribed_at is not None
                and not _quoted_since_subscribe(slot)
                and now - slot.subscribed_at > self.config.quote_timeout_s
                and self._cancel(slot, "no quote", actions)
            ):
                slot.timeouts += 1
                self.timeouts += 1
                slot.not_before = now + self.config.retry_after_s
        self._shed(actions)
        self._fill_long(actions)
        self._rotate(now, actions)
        return actions

    def _rebalance(self, now: float) -> None:
        """Long-lived membership: the riskiest `long_capacity()` legs, with hysteresis against churn."""
        self._rebalance_now = False
        self._last_rebalance = now
        capacity = self.long_capacity()
        ranked = sorted(self.legs.values(), key=lambda s: (-s.score, s.conid))
        if capacity >= len(ranked):
            for slot in ranked:
                slot.role = Role.LONG  # everything fits: promoted, a held rotating line simply stays
            return
        longs = [s for s in ranked if s.role is Role.LONG]
        while len(longs) > capacity:  # the budget shrank: the least risky long-lived legs rotate
            longs.pop().role = Role.ROTATE
        candidates = [s for s in ranked if s.role is Role.ROTATE]
        for slot in candidates:
            if len(longs) < capacity:
                slot.role = Role.LONG
                longs.append(slot)
                longs.sort(key=lambda s: (-s.score, s.conid))
            elif longs and slot.score > longs[-1].score * self.config.promote_ratio:
                longs.pop().role = Role.ROTATE
                slot.role = Role.LONG
                longs.append(slot)
                longs.sort(key=lambda s: (-s.score, s.conid))

    def _shed(self, actions: list[Action]) -> None:
        """Cancel lines that roles or budget no longer allow: rotating past the pool, demoted long-lived."""
        held_long = [s for s in self.legs.values() if s.line is Line.HELD and s.role is Role.LONG]
        held_pool = [s for s in self.legs.values() if s.line is Line.HELD and s.role is Role.ROTATE]
        # a demoted long-lived leg holding a line counts as rotating: its line is the first to go
        excess = len(held_long) + len(held_pool) - self.budget
        pool_excess = len(held_pool) - self.pool_lines()
        # lines that already did their job (quoted since subscribed) go first, then the newest subscriptions
        held_pool.sort(key=lambda s: (not _quoted_since_subscribe(s), -(s.subscribed_at or 0.0)))
        for slot in held_pool:
            if excess <= 0 and pool_excess <= 0:
                break
            if self._cancel(slot, "over budget", actions):
                excess -= 1
                pool_excess -= 1
        for slot in sorted(held_long, key=lambda s: (s.score, -s.conid)):
            if excess <= 0:
                break
            if self._cancel(slot, "over budget", actions):
                excess -= 1

    def _fill_long(self, actions: list[Action]) -> None:
        for slot in sorted(self.legs.values(), key=lambda s: (-s.score, s.conid)):
            if slot.role is Role.LONG and slot.line is Line.NONE and slot.not_before <= self.clock():
                if self.lines_held() >= self.budget or not self._subscribe(slot, "long-lived", actions):
                    return

    def _rotate(self, now: float, actions: list[Action]) -> None:
        """Free pool lines go to the legs due; a quoted leg's line is handed to the next leg in one go (its
        cancel and the next subscribe together), so the pool's lines stay held: no other client can take
        one mid-rotation, and the lines the owner counts are the lines IB counts."""
        free = min(self.pool_lines() - self._pool_held(), self.budget - self.lines_held())
        due = [
            s
            for s in self.legs.values()
            if s.role is Role.ROTATE and s.line is Line.NONE and s.not_before <= now
        ]
        # oldest quote first (never quoted = oldest), riskiest first among equals
        due.sort(key=lambda s: (s.last_quote_at if s.last_quote_at is not None else -math.inf, -s.score))
        assert self._bucket is not None
        for slot in due:
            if free > 0:
                if not self._subscribe(slot, "rotation", actions):
                    return
                free -= 1
            elif self._done and self._bucket.tokens - 2.0 >= self.config.reserve:
                self._cancel(self._done.pop(0), "quoted", actions)
                self._subscribe(slot, "rotation", actions)
            else:
                return

    # ---- lines and messages --------------------------------------------------------------------------------
    def _subscribe(self, slot: LegSlot, reason: str, actions: list[Action]) -> bool:
        assert self._bucket is not None
        if not self._bucket.take(keep=self.config.reserve):
            return False
        slot.line = Line.HELD
        slot.subscribed_at = self.clock()
        self.messages_sent += 1
        actions.append(Action("subscribe", slot.conid, slot.role, reason))
        return True

    def _cancel(self, slot: LegSlot, reason: str, actions: list[Action], force: bool = False) -> bool:
        assert self._bucket is not None
        if not self._bucket.take(keep=0.0):
            if not force:
                return False
            self._bucket.tokens -= 1.0  # a deactivated leg leaves now; the debt delays the next subscribes
        slot.line = Line.NONE
        slot.subscribed_at = None
        self.messages_sent += 1
        actions.append(Action("cancel", slot.conid, slot.role, reason))
        return True

    def lines_held(self) -> int:
        return sum(1 for s in self.legs.values() if s.line is Line.HELD)

    def _pool_held(self) -> int:
        return sum(1 for s in self.legs.values() if s.line is Line.HELD and s.role is Role.ROTATE)

    def overflows(self) -> bool:
        return len(self.legs) > self.budget

    def pool_lines(self) -> int:
        """Lines the pool uses: 0 when every leg fits; else the floor, or as many as the message rate can keep
        busy (rotation rate x quote latency) if that is more, never more than the budget."""
        if not self.overflows():
            return 0
        busy = math.ceil(self.config.msg_rate / 2.0 * self.latency_p95() * 1.5)
        return min(self.budget, max(self.config.floor_lines, busy, 1))

    def long_capacity(self) -> int:
        return self.budget - self.pool_lines() if self.overflows() else len(self.legs)

    # ---- the bound -----------------------------------------------------------------------------------------
    def _note_latency(self, seconds: float) -> None:
        self._latencies.append(seconds)
        while len(self._latencies) > self.config.latency_samples:
            self._latencies.popleft()

    def latency_p95(self) -> float:
        if not self._latencies:
            return self.config.default_latency_s
        ordered = sorted(self._latencies)
        return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]

    def rotation_rate(self) -> float:
        """Overflow legs quoted per second at most: limited by pool lines and by the message rate."""
        pool = self.pool_lines()
        if pool == 0:
            return 0.0
        return min(pool / self.latency_p95(), self.config.msg_rate / 2.0)

    def observed_rate(self) -> float | None:
        """Rotating legs quoted per second over the last `rate_window_s` (None until legs have overflowed
        that long): a loaded machine or a slow gateway rotates slower than the pacing allows."""
        now = self.clock()
        window = self.config.rate_window_s
        while self._completions and self._completions[0] <= now - window:
            self._completions.popleft()
        if self._overflow_since is None or now - self._overflow_since < window:
            return None
        return len(self._completions) / window

    def bound_s(self) -> float | None:
        """How old any active leg's newest row may get, in seconds (None: no leg rotates)."""
        overflow = sum(1 for s in self.legs.values() if s.role is Role.ROTATE)
        rate = self.rotation_rate()
        if overflow == 0 or rate == 0:
            return None
        observed = self.observed_rate()
        rate *= self.config.rate_margin
        if observed is not None and observed < rate:
            rate = max(observed, 1e-3)  # the bound follows what is achieved, not what is allowed
        cycle = overflow / rate
        return cycle + self.latency_p95() + self.config.flush_interval_s

    # ---- status --------------------------------------------------------------------------------------------
    def status(self) -> list[LegStatus]:
        now = self.clock()
        return [
            LegStatus(
                s.conid,
                s.score,
                s.role.value,
                s.line.value,
                None if s.last_quote_at is None else now - s.last_quote_at,
                s.rotations,
                s.timeouts,
            )
            for s in sorted(self.legs.values(), key=lambda s: (-s.score, s.conid))
        ]

    def summary(self) -> RotationSummary:
        now = self.clock()
        ages = [now - s.last_quote_at for s in self.legs.values() if s.last_quote_at is not None]
        longs = sum(1 for s in self.legs.values() if s.role is Role.LONG)
        return RotationSummary(
            legs=len(self.legs),
            budget=self.budget,
            long_lines=longs,
            pool_lines=self.pool_lines(),
            overflow=len(self.legs) - longs,
            lines_held=self.lines_held(),
            bound_s=self.bound_s(),
            latency_p95_s=self.latency_p95(),
            msg_rate=self.config.msg_rate,
            messages_sent=self.messages_sent,
            rotations=self.rotations,
            timeouts=self.timeouts,
            max_age_s=max(ages) if ages else None,
        )


def _quoted_since_subscribe(slot: LegSlot) -> bool:
    return (
        slot.subscribed_at is not None
        and slot.last_quote_at is not None
        and slot.last_quote_at >= slot.subscribed_at
    )
