"""The rotation scheduler as a pure state machine: a fake clock and a fake gateway that quotes each subscribed
leg after a latency — lines, pacing, ages against the bound, promotion, deactivation."""

from __future__ import annotations

import math
from collections import deque

import pytest

from v6_positions.ib.routing.rotation import Action, Role, RotationConfig, RotationScheduler


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Gateway:
    """Applies the scheduler's actions as IB would: lines held, a first quote `latency` s after subscribe,
    every message's send time kept to check the pacing."""

    def __init__(self, sched: RotationScheduler, clock: Clock, latency: float = 0.2, silent=()) -> None:
        self.sched, self.clock, self.latency = sched, clock, latency
        self.held: dict[int, float] = {}  # conid -> subscribed at
        self.sent: list[float] = []
        self.max_held = 0
        self.silent = set(silent)  # never quoted
        self.cancels: list[Action] = []

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            self.sent.append(self.clock.now)
            if action.kind == "subscribe":
                assert action.conid not in self.held, f"double subscribe of {action.conid}"
                self.held[action.conid] = self.clock.now
            else:
                assert self.held.pop(action.conid, None) is not None, f"cancel of unheld {action.conid}"
                self.cancels.append(action)
        self.max_held = max(self.max_held, len(self.held))

    def run(self, seconds: float, step: float = 0.05) -> None:
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.clock.now = round(self.clock.now + step, 6)
            for conid, at in list(self.held.items()):
                if conid not in self.silent and self.clock.now - at >= self.latency:
                    self.sched.on_quote(conid)
            self.apply(self.sched.poll())

    def peak_rate(self) -> int:
        window: deque[float] = deque()
        peak = 0
        for t in self.sent:
            window.append(t)
            while window[0] <= t - 1.0:
                window.popleft()
            peak = max(peak, len(window))
        return peak


def _scheduler(legs: int, budget: int, **config) -> tuple[RotationScheduler, Clock]:
    clock = Clock()
    sched = RotationScheduler(RotationConfig(**config), clock)
    sched.set_legs({conid: float(1000 - conid) for conid in range(legs)})  # conid 0 is the riskiest
    sched.set_budget(budget)
    return sched, clock


def _ages(sched: RotationScheduler) -> list[float]:
    return [s.age_s if s.age_s is not None else math.inf for s in sched.status()]


def test_150_legs_on_100_lines_all_fresh_within_the_bound_riskiest_long_lived_paced() -> None:
    sched, clock = _scheduler(150, 100, floor_lines=10, msg_rate=20.0)
    gateway = Gateway(sched, clock, latency=0.2)
    gateway.run(20.0)  # warm-up: 90 long-lived subscribes and a first full cycle
    bound = sched.bound_s()
    assert bound is not None and bound < 10.0
    worst = 0.0
    for _ in range(60):  # one simulated minute, ages sampled every second
        gateway.run(1.0)
        worst = max(worst, max(_ages(sched)))
    assert worst <= bound, (worst, bound)
    summary = sched.summary()
    assert (summary.long_lines, summary.pool_lines, summary.overflow) == (90, 10, 60)
    longs = {s.conid for s in sched.status() if s.role == Role.LONG.value}
    assert longs == set(range(90))  # the 90 riskiest hold the long-lived lines
    assert gateway.max_held <= 100  # never more than the budget: rotation cannot cause a 101
    assert gateway.peak_rate() <= 30 < 50  # burst + rate, well under IB's 50/s
    assert all(s.rotations >= 5 for s in sched.status() if s.role == Role.ROTATE.value)


def test_the_bound_is_cycle_time_plus_latency_plus_flush() -> None:
    sched, clock = _scheduler(150, 100, floor_lines=10, msg_rate=20.0, flush_interval_s=1.0)
    gateway = Gateway(sched, clock, latency=0.2)
    gateway.run(40.0)  # past the warm-up: the last 15 s rotated at the full 10 legs/s
    assert sched.observed_rate() == pytest.approx(10.0, abs=0.5)
    assert sched.latency_p95() == pytest.approx(0.2, abs=0.051)  # observed, not the 0.3 default
    latency = sched.latency_p95()
    # 60 rotating legs at min(10 lines / latency, 20 msg/s / 2 messages) = 10 legs per second
    assert sched.rotation_rate() == 10.0
    assert sched.bound_s() == pytest.approx(60 / (10.0 * 0.9) + latency + 1.0)
    # a slower gateway than the pacing allows: the bound follows the achieved rate
    gateway.latency = 2.0  # quotes now take 2 s: the pool grows, but rotation is slower meanwhile
    gateway.run(10.0)
    observed, summary = sched.observed_rate(), sched.summary()
    assert observed is not None and observed < 0.9 * sched.rotation_rate()
    assert summary.bound_s == pytest.approx(summary.overflow / observed + sched.latency_p95() + 1.0)
    # no overflow, no bound
    fits, _ = _scheduler(50, 100)
    assert fits.bound_s() is None and fits.pool_lines() == 0


def test_a_leg_deactivated_mid_rotation_leaves_the_pool_at_once_even_with_no_tokens() -> None:
    sched, clock = _scheduler(150, 100, floor_lines=10)
    gateway = Gateway(sched, clock, latency=0.4)
    gateway.run(10.0)
    rotating = [s.conid for s in sched.status() if s.role == Role.ROTATE.value and s.line == "held"]
    assert rotating, "some overflow leg holds a pool line"
    victim = rotating[0]
    sched._bucket.tokens = 0.0  # rotation ran the bucket dry
    sched.set_legs({s.conid: s.score for s in sched.status() if s.conid != victim})
    actions = sched.poll()
    gateway.apply(actions)
    assert [(a.kind, a.conid, a.reason) for a in actions] == [("cancel", victim, "deactivated")]
    assert victim not in gateway.held and victim not in sched.legs
    assert all(s.conid != victim for s in sched.status())


def test_a_long_lived_leg_deactivated_is_cancelled_and_its_line_goes_to_the_next_riskiest() -> None:
    sched, clock = _scheduler(150, 100, floor_lines=10)
    gateway = Gateway(sched, clock)
    gateway.run(15.0)
    sched.set_legs({s.conid: s.score for s in sched.status() if s.conid != 0})
    gateway.run(1.0)
    assert 0 not in gateway.held
    assert {s.conid for s in sched.status() if s.role == Role.LONG.value} == set(range(1, 91))
    gateway.run(2.0)
    assert 90 in gateway.held  # promoted into the freed long-lived line


def test_budget_growth_promotes_every_leg_without_dropping_held_lines() -> None:
    sched, clock = _scheduler(150, 100, floor_lines=10)
    gateway = Gateway(sched, clock, latency=0.5)
    gateway.run(15.0)
    in_flight = {s.conid for s in sched.status() if s.role == Role.ROTATE.value and s.line == "held"}
    cancels_before = len(gateway.cancels)
    sched.set_budget(160)  # the bot freed 60 lines
    gateway.run(10.0)
    assert all(s.role == Role.LONG.value for s in sched.status())
    assert set(gateway.held) == set(range(150)) and sched.pool_lines() == 0
    assert len(gateway.cancels) == cancels_before  # the in-flight rotating lines simply stayed
    assert in_flight <= set(gateway.held)
    assert sched.bound_s() is None


def test_budget_shrink_cancels_pool_then_least_risky_and_never_subscribes_over_it() -> None:
    sched, clock = _scheduler(150, 100, floor_lines=10)
    gateway = Gateway(sched, clock)
    gateway.run(15.0)
    cancels_before = len(gateway.cancels)
    sched.set_budget(60)  # a bot took 40 lines (the streamer saw a 101)
    over_budget_subscribes = 0
    for _ in range(100):
        before = len(gateway.held)
        actions = sched.poll()
        if before >= 60:
            over_budget_subscribes += sum(a.kind == "subscribe" for a in actions)
        gateway.apply(actions)
        gateway.run(0.05)
    assert over_budget_subscribes == 0
    assert len(gateway.held) <= 60
    longs = {s.conid for s in sched.status() if s.role == Role.LONG.value}
    assert longs == set(range(50))  # 60 - 10 pool lines, riskiest kept
    shed = [a.conid for a in gateway.cancels[cancels_before:] if a.reason == "over budget"]
    assert shed and min(shed) >= 50  # the least risky long-lived legs went, never the riskiest 50
    assert set(range(50)) <= set(gateway.held)


def test_a_score_jump_promotes_with_hysteresis() -> None:
    sched, clock = _scheduler(150, 100, floor_lines=10, rebalance_interval_s=5.0, promote_ratio=1.5)
    gateway = Gateway(sched, clock)
    gateway.run(15.0)
    scores = {s.conid: s.score for s in sched.status()}
    weakest_long = scores[89]
    scores[149] = weakest_long * 1.2  # riskier than the weakest long-lived leg, but not by the ratio
    sched.set_legs(scores)
    gateway.run(6.0)
    assert dict((s.conid, s.role) for s in sched.status())[149] == Role.ROTATE.value
    scores[149] = weakest_long * 3.0  # the underlying moved: this leg is now far riskier
    sched.set_legs(scores)
    gateway.run(6.0)
    roles = {s.conid: s.role for s in sched.status()}
    assert roles[149] == Role.LONG.value and roles[89] == Role.ROTATE.value
    assert 149 in gateway.held


def test_a_leg_that_never_quotes_times_out_and_the_others_keep_rotating() -> None:
    sched, clock = _scheduler(120, 100, floor_lines=10, quote_timeout_s=2.0, retry_after_s=3.0)
    gateway = Gateway(sched, clock, silent={119})
    gateway.run(30.0)
    status = {s.conid: s for s in sched.status()}
    assert status[119].timeouts >= 2 and sched.summary().timeouts == status[119].timeouts
    assert all(s.age_s is not None and s.age_s < 10 for c, s in status.items() if c != 119)


def test_a_refused_subscription_holds_no_line_and_is_retried_later() -> None:
    sched, clock = _scheduler(5, 5)
    actions = sched.poll()
    assert [a.kind for a in actions] == ["subscribe"] * 5  # within the bucket's burst (10 - reserve 4)
    sched.on_refused(actions[0].conid)
    assert sched.lines_held() == 4
    clock.now += 1.0
    assert [a.conid for a in sched.poll()] == []  # not before retry_after_s
    clock.now += 5.0
    assert [a.conid for a in sched.poll()] == [actions[0].conid]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("msg_rate", 50.0),
        ("msg_rate", 0.0),
        ("floor_lines", -1),
        ("reserve", 10.0),
        ("burst", 40.0),
        ("rate_margin", 0.0),
    ],
)
def test_bad_config_is_refused_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        RotationConfig(**{field: value})
