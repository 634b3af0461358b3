"""Invalid rows are refused with an error naming field and value, and nothing is written."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from lake_helpers import enqueue, queue_items, queue_version

from v6_positions.lake.errors import InvalidRowError
from v6_positions.lake.history import HistoryWriter, PositionRow, write_rows
from v6_positions.lake.queue import PositionQueue, QueueItem
from v6_positions.lake.registry import StrategyRegistry
from v6_positions.lake.tables import read_table, table_version

GOOD_LEG = {
    "conid": 11,
    "symbol": "SPY",
    "right": "C",
    "strike": 500.0,
    "expiry": "20261218",
    "strategy_id": 1,
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("conid", 0),
        ("conid", -5),
        ("right", "X"),
        ("right", ""),
        ("strike", 0.0),
        ("strike", -1.0),
        ("strike", float("nan")),
        ("expiry", "20260231"),
        ("expiry", "2026-12-18"),
        ("expiry", "202612"),
        ("symbol", ""),
        ("symbol", "   "),
    ],
)
def test_registry_refuses_bad_leg(tmp_path: Path, field: str, value: object) -> None:
    registry = StrategyRegistry(str(tmp_path))
    with pytest.raises(InvalidRowError) as info:
        registry.add_active(**{**GOOD_LEG, field: value})
    assert str(info.value).startswith(f"strategy_registry: {field}={value!r}: ")
    assert info.value.field == field and info.value.table == "strategy_registry"
    assert table_version(str(tmp_path), "strategy_registry") == -1


def test_registry_refuses_unknown_sec_type(tmp_path: Path) -> None:
    registry = StrategyRegistry(str(tmp_path))
    with pytest.raises(InvalidRowError, match="sec_type='OPTION'"):
        registry.add_active(**GOOD_LEG, sec_type="OPTION")
    assert read_table(str(tmp_path), "strategy_registry").is_empty()


def test_rights_call_and_put_are_normalised(tmp_path: Path) -> None:
    registry = StrategyRegistry(str(tmp_path))
    registry.add_active(**{**GOOD_LEG, "right": "call"})
    registry.add_active(**{**GOOD_LEG, "conid": 12, "right": "PUT", "sec_type": "fop"})
    legs = {leg.conid: leg for leg in registry.active_legs()}
    assert (legs[11].right, legs[12].right, legs[12].sec_type) == ("C", "P", "FOP")


@pytest.mark.parametrize("sec_type", ["OPT", "FOP", "STK", "FUT", "IND", "CASH", "BAG", "WAR"])
def test_known_sec_types_are_accepted(tmp_path: Path, sec_type: str) -> None:
    enqueue(PositionQueue(str(tmp_path)), 1, "X", sec_type=sec_type)
    assert read_table(str(tmp_path), "position_queue")["sec_type"].to_list() == [sec_type]


def test_queue_batch_with_one_bad_row_writes_nothing(tmp_path: Path) -> None:
    queue = PositionQueue(str(tmp_path))
    enqueue(queue, 1, "SPY")
    version = queue_version(queue)
    items = [QueueItem(account="A", conid=c, symbol="SPY") for c in range(1, 1001)]
    items[637] = QueueItem(account="A", conid=638, symbol="SPY", right="Z")
    with pytest.raises(InvalidRowError) as info:
        queue.insert_many(items)
    assert info.value.row_index == 637
    assert str(info.value).startswith("position_queue row 637: right='Z': ")
    assert queue_version(queue) == version
    assert queue.keys() == [("", 1)]


@pytest.mark.parametrize(
    ("field", "value"),
    [("conid", 0), ("symbol", ""), ("sec_type", "XYZ"), ("strike", float("nan")), ("expiry", "20261332")],
)
def test_queue_insert_refuses_bad_field(tmp_path: Path, field: str, value: object) -> None:
    queue = PositionQueue(str(tmp_path))
    kwargs = {"conid": 5, "symbol": "SPY", field: value}
    with pytest.raises(InvalidRowError, match=f"^position_queue row 0: {field}="):
        enqueue(queue, **kwargs)
    assert queue_version(queue) == -1


def test_stock_strike_zero_and_empty_right_mean_none(tmp_path: Path) -> None:
    queue = PositionQueue(str(tmp_path))
    enqueue(queue, 7, "AAPL", sec_type="STK", strike=0.0, right="", expiry="")
    (item,) = queue_items(queue)
    assert (item.strike, item.right, item.expiry) == (None, None, None)
    with pytest.raises(InvalidRowError, match="strike=0.0"):
        enqueue(queue, 8, "SPY", sec_type="OPT", strike=0.0)


def test_history_refuses_bad_rows_before_buffering(tmp_path: Path) -> None:
    writer = HistoryWriter(str(tmp_path))
    with pytest.raises(InvalidRowError, match="^streamed_positions: conid=-1: "):
        writer.append(PositionRow(account="A", conid=-1, symbol="SPY"))
    good = PositionRow(account="A", conid=1, symbol="SPY", event_time=datetime.now(UTC))
    with pytest.raises(InvalidRowError, match="^streamed_positions row 1: sec_type='NOPE'"):
        writer.extend([good, PositionRow(account="A", conid=2, symbol="SPY", sec_type="NOPE")])
    assert writer.buffered == 0
    with pytest.raises(InvalidRowError, match="^queued_positions row 0: symbol=''"):
        write_rows(str(tmp_path), "queued_positions", [PositionRow(account="A", conid=3, symbol="")])
    assert table_version(str(tmp_path), "queued_positions") == -1
