"""The line ledger: every line taken and given back in one place; a 101 caps the grant at what IB held; one
probe at a time, paced by the backoff, wins freed lines back; the long-lived/pool split is derived from it."""

from __future__ import annotations

import asyncio
import random

import pytest
from ib_async import IB

from v6_positions.ib.connection.session import IBSession, SessionConfig
from v6_positions.ib.lines.ledger import POOL, STREAM, LineLedger


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ledger(configured: int = 100) -> tuple[LineLedger, Clock, list[str]]:
    clock = Clock()
    lines = LineLedger(configured, probe_base_s=1.0, probe_cap_s=20.0, clock=clock, rng=random.Random(1))
    calls: list[str] = []
    lines.watch(lambda: calls.append("changed"))
    return lines, clock, calls


def fill(lines: LineLedger, count: int, holder: str = STREAM, first: int = 1) -> None:
    for conid in range(first, first + count):
        assert lines.take(holder, conid)
        lines.confirm(holder, conid)


def test_the_configured_budget_applies_until_ib_refuses():
    lines, _, _ = ledger(3)
    fill(lines, 3)
    assert (lines.held, lines.limit, lines.capped) == (3, 3, False)
    assert not lines.take(POOL, 99) and not lines.can_take()  # the budget is full: no request goes out
    assert lines.probes == 0


def test_a_101_caps_at_what_ib_held_and_refused_probes_back_off_to_the_cap():
    lines, clock, _ = ledger()
    fill(lines, 10)
    assert lines.take(STREAM, 11)
    lines.release(STREAM, 3)  # given back before IB answered the 11th: IB held 10 when it said full
    lines.refuse(STREAM, 11)
    assert (lines.cap, lines.held, lines.rejections) == (10, 9, 1)
    assert lines.take(POOL, 3)  # within the grant: no probe
    delays = [lines.seconds_to_probe()]
    for attempt in range(8):
        assert not lines.take(STREAM, 100 + attempt) and lines.probes == attempt  # not before the backoff
        clock.now += lines.seconds_to_probe()
        assert lines.limit == 11 and lines.take(STREAM, 100 + attempt)  # the probe: exactly one more line
        assert lines.probing and not lines.take(POOL, 200)  # never a second line beyond the grant
        lines.refuse(STREAM, 100 + attempt)
        delays.append(lines.seconds_to_probe())
    assert delays[0] < delays[1] < delays[2]
    assert max(delays) <= 20.0 * 1.2 and delays[-1] >= 20.0 * 0.8  # capped: freed lines noticed within ~24 s
    assert (lines.probes, lines.probes_won, lines.rejections, lines.cap) == (8, 0, 9, 10)


def test_a_probe_given_up_before_ib_answered_counts_as_tried():
    lines, clock, calls = ledger()
    fill(lines, 5)
    assert lines.take(STREAM, 6)
    lines.refuse(STREAM, 6)
    clock.now += lines.seconds_to_probe()
    assert lines.take(POOL, 7)  # the pool's line is the probe this time
    calls.clear()
    lines.release(POOL, 7)  # the leg went away before IB answered
    assert not lines.probing and calls == ["changed"]
    assert lines.seconds_to_probe() >= 0.8 * 2.0  # the next waits the (grown) backoff: never a busy loop
    assert not lines.take(STREAM, 8) and lines.probes == 1


def test_a_won_probe_raises_the_grant_by_one_and_the_next_follows_at_once():
    lines, clock, calls = ledger(12)
    fill(lines, 4)
    assert lines.take(STREAM, 5)
    lines.refuse(STREAM, 5)
    clock.now += lines.seconds_to_probe()
    for held in range(4, 11):
        calls.clear()
        holder = POOL if held % 2 else STREAM  # data on a pool line is evidence like a long-lived stream's
        assert lines.take(holder, 100 + held)
        lines.confirm(holder, 100 + held)
        assert lines.cap == held + 1 and lines.seconds_to_probe() == 0.0 and calls == ["changed"]
    fill(lines, 1, first=500)
    assert lines.cap is None and lines.limit == 12 and lines.probes_won == 8  # back at the budget
    assert not lines.take(STREAM, 600)


def test_a_confirmation_proves_the_lines_held_before_it_not_those_taken_after():
    lines, clock, _ = ledger()
    fill(lines, 3)
    assert lines.take(STREAM, 4)
    lines.refuse(STREAM, 4)  # granted: 3
    lines.release(STREAM, 1)
    assert lines.take(POOL, 10)  # 2 lines held before it
    lines.release(STREAM, 2)
    clock.now += lines.seconds_to_probe()
    assert lines.take(POOL, 11)  # 2 before it: within the grant
    assert lines.take(POOL, 12) and lines.probing  # 3 before it: the probe
    lines.confirm(POOL, 10)  # proves 3 lines: nothing new
    assert lines.cap == 3 and lines.probing
    lines.refuse(POOL, 11)  # IB was full at 2 after all; the probe had one line fewer before it
    assert lines.cap == 2 and lines.probing
    lines.confirm(POOL, 12)  # IB held 3, 10 and 12 at once
    assert lines.cap == 3 and lines.probes_won == 1 and not lines.probing


def test_the_split_sizes_the_pool_on_the_grant_and_gives_the_probe_line_to_a_long_lived_stream():
    lines, clock, _ = ledger(100)
    assert lines.split(12, 10) == (100, 0)  # everything fits
    assert lines.split(150, 10) == (90, 10)
    assert lines.split(150, 0) == (100, 0)  # pool off: the legs beyond are queued only
    fill(lines, 5)
    assert lines.take(STREAM, 6)
    lines.refuse(STREAM, 6)
    assert lines.split(12, 10) == (3, 2)  # half the grant at most
    assert lines.split(6, 10) == (4, 1)  # one leg beyond the grant: one pool line for two legs
    clock.now += lines.seconds_to_probe()
    assert lines.split(12, 10) == (4, 2)  # the probe's line is long-lived; the pool keeps its size
    assert lines.split(6, 10) == (6, 0)  # with the probe every leg fits


def test_a_stream_waiting_for_a_line_is_told_when_one_frees_up():
    lines, _, calls = ledger(3)
    fill(lines, 2, holder=POOL)
    fill(lines, 1)
    assert not lines.take(STREAM, 9)
    lines.release(POOL, 1)
    assert calls == ["changed"] and lines.take(STREAM, 9)
    lines.release(POOL, 2)
    assert calls == ["changed"]  # nobody waits: no call
    lines.release_all(STREAM)  # the connection dropped
    assert lines.held == 0


def test_a_ledger_needs_a_budget():
    with pytest.raises(ValueError, match="configured=0"):
        LineLedger(0)


def test_farm_ok_after_a_link_loss_ends_the_wait_without_a_new_socket():
    async def scenario():
        session = IBSession(SessionConfig(), IB())
        session._handle_error(-1, 1100, "Connectivity between IB and TWS has been lost.")
        assert session.link_lost
        session._handle_error(-1, 2104, "Market data farm connection is OK:usfarm")
        assert not session.link_lost
        session._handle_error(-1, 2104, "Market data farm connection is OK:usfarm")  # harmless otherwise
        assert not session.link_lost and session.reconnects == 0

    asyncio.run(scenario())


def test_the_stream_session_never_roams_and_a_helper_range_excludes_the_stream_id():
    from v6_positions.config import Settings
    from v6_positions.ib.connection.client_ids import helper_client_ids, helper_id_range

    assert not IBSession(SessionConfig(client_id=10), IB()).roams
    settings = Settings(ib_client_id=10)
    assert helper_client_ids(settings) == tuple(range(11, 20))
    assert helper_id_range(settings) == (11, 9)
    with pytest.raises(ValueError, match="include the stream's clientId 10"):
        helper_id_range(settings, 5)
