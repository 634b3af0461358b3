"""LineGrant: a 101 caps the lines at what IB granted; probes win freed lines back one at a time."""

from __future__ import annotations

import asyncio
import random

from ib_async import IB

from v6_positions.ib.lines import LineGrant
from v6_positions.ib.session import IBSession, SessionConfig


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def grant(configured: int = 100) -> tuple[LineGrant, Clock]:
    clock = Clock()
    return LineGrant(configured, probe_base_s=1.0, probe_cap_s=20.0, clock=clock, rng=random.Random(1)), clock


def test_the_configured_budget_applies_until_ib_refuses():
    lines, _ = grant(80)
    assert lines.limit == 80 and not lines.capped
    assert not lines.start_probe()  # nothing to probe for
    lines.granted(80)
    assert lines.limit == 80


def test_a_101_caps_at_the_lines_held_and_failed_probes_back_off_to_the_cap():
    lines, clock = grant()
    lines.refused(lines_held=10)
    assert (lines.cap, lines.limit, lines.rejections) == (10, 10, 1)
    delays = [lines.seconds_to_probe()]
    for _ in range(8):
        assert not lines.start_probe()  # not before the backoff delay
        clock.now += lines.seconds_to_probe()
        assert lines.start_probe() and lines.limit == 11  # one probe: exactly one more line
        assert not lines.start_probe()  # never a second probe in flight
        lines.refused(lines_held=10)
        delays.append(lines.seconds_to_probe())
    assert delays[0] < delays[1] < delays[2]
    assert max(delays) <= 20.0 * 1.2  # capped: freed lines are noticed within ~24 s
    assert delays[-1] >= 20.0 * 0.8
    assert lines.probes == 8 and lines.rejections == 9 and lines.limit == 10


def test_a_won_probe_raises_the_cap_and_the_next_probe_follows_at_once():
    lines, clock = grant(12)
    lines.refused(lines_held=4)
    clock.now += lines.seconds_to_probe()
    for held in range(5, 12):
        assert lines.start_probe()
        lines.granted(held)
        assert lines.cap == held and lines.seconds_to_probe() == 0.0
    assert lines.start_probe()
    lines.granted(12)  # back at the configured budget: no cap, no more probing
    assert lines.cap is None and lines.limit == 12 and not lines.start_probe()
    assert lines.probes_won == 8


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
    import pytest

    from v6_positions.config import Settings
    from v6_positions.ib.client_ids import helper_client_ids, helper_id_range

    assert not IBSession(SessionConfig(client_id=10), IB()).roams
    settings = Settings(ib_client_id=10)
    assert helper_client_ids(settings) == tuple(range(11, 20))
    assert helper_id_range(settings) == (11, 9)
    with pytest.raises(ValueError, match="include the stream's clientId 10"):
        helper_id_range(settings, 5)
