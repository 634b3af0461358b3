"""QueueBuffer: coalesced queue writes on a real Delta queue; refused rows and failed commits are counted
(the stream status shows them as queue_rows_rejected / queue_flush_errors) and lose nothing else."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from ib_async import Contract, Position
from lake_helpers import queue_items, queue_version

from v6_positions.ib.account.holdings import Holding, apply_pnl, holding_from_position
from v6_positions.ib.rows.queue_buffer import QueueBuffer
from v6_positions.lake.queue import PositionQueue

NOW = datetime(2026, 1, 2, 15, 30, tzinfo=UTC)


def held(conid: int, sec_type: str = "OPT", position: float = 2.0) -> Holding:
    contract = Contract(
        conId=conid, symbol="SPY", secType=sec_type, lastTradeDateOrContractMonth="20261218", strike=600.0,
        right="C", multiplier="100",
    )
    return holding_from_position(Position("DU1", contract, position, 150.0))


def test_a_refused_row_is_dropped_and_counted_and_the_others_land_in_one_commit(tmp_path: Path) -> None:
    queue = PositionQueue(str(tmp_path))
    buffer = QueueBuffer(queue)
    good = held(1)
    apply_pnl(good, 240.0, -60.0, 0.0, NOW)
    buffer.put(good, 2)
    buffer.put(held(2, sec_type="XYZ"), 2)  # not a sec type the queue knows
    buffer.put(held(3), 0)
    buffer.put(held(3), 2)  # coalesced with the buffered row: the better priority stays
    assert asyncio.run(buffer.flush()) == 2
    assert (buffer.rows_rejected, buffer.flush_errors, buffer.commits, len(buffer)) == (1, 0, 1, 0)
    items = {item.conid: item for item in queue_items(queue)}
    assert sorted(items) == [1, 3] and items[3].priority == 0
    assert (items[1].market_price, items[1].market_value, items[1].payload_time) == (1.2, 240.0, NOW)


def test_an_unchanged_payload_is_not_written_again_unless_forced(tmp_path: Path) -> None:
    queue = PositionQueue(str(tmp_path))
    buffer = QueueBuffer(queue)
    buffer.put(held(1), 2)
    asyncio.run(buffer.flush())
    version = queue_version(queue)
    buffer.put(held(1), 2)  # IB re-sent the same payload
    assert len(buffer) == 0
    buffer.put(held(1), 2, force=True)  # a routing change: pending again
    assert asyncio.run(buffer.flush()) == 1 and queue_version(queue) == version + 1


def test_a_failed_commit_is_counted_and_keeps_the_rows(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the lake should be")
    buffer = QueueBuffer(PositionQueue(str(blocked)))
    buffer.put(held(1), 2)
    assert asyncio.run(buffer.flush()) == 0
    assert (buffer.flush_errors, buffer.rows_written, len(buffer)) == (1, 0, 1)
