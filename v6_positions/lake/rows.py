"""The lake's row records, next to the schemas they fill, and their checks.

- `PositionRow`: ONE observation of a held contract (a tick, a portfolio state, a batch refresh). It is the
  only observation record: the streamer's handlers, the history tables and the `positions` book take it.
- `QueueItem`: one `position_queue` row: a held contract waiting for a batch refresh, its queue state and
  the payload IB last sent for it. `QueueItem.observation` is the one copy of a payload into a PositionRow.

Both start with the `HeldContract` columns (schemas.HELD_CONTRACT_COLUMNS) and check them the same way.
`Valuation` is the field group IB's reqPnLSingle fills; `QueueItem` and the streamer's `Holding`
(`ib/account/holdings.py`) carry it (declared here once, so the queue's payload and the holding's can never
drift apart).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime

import polars as pl

from v6_positions.lake import validation as v
from v6_positions.lake.errors import InvalidRowError
from v6_positions.lake.schemas import (
    HELD_CONTRACT_COLUMNS,
    PAYLOAD_COLUMNS,
    POSITION_QUEUE,
    POSITION_ROW_COLUMNS,
    TableSpec,
)
from v6_positions.lake.tables import conform

Key = tuple[str, int]  # (account, conid): one contract may sit in several accounts

PENDING, DONE, FAILED = "pending", "done", "failed"
STATUSES = (PENDING, DONE, FAILED)
# Priorities: 0 = active leg that did not fit the line budget, 1 = demoted by IB, 2 = default.
DEFAULT_PRIORITY = 2


@dataclass(slots=True)
class HeldContract:
    """A contract as held in one account: the key (account, conid) and the contract's columns."""

    account: str
    conid: int
    symbol: str
    sec_type: str = "OPT"
    right: str | None = None
    strike: float | None = None
    expiry: str | None = None

    @property
    def key(self) -> Key:
        return (self.account, int(self.conid))

    def held_contract(self) -> dict[str, object]:
        """The account and contract columns, as keywords for another record of the same contract."""
        return {name: getattr(self, name) for name in HELD_CONTRACT_COLUMNS}


@dataclass
class Valuation:
    """IB's valuation of a held position (a reqPnLSingle answer): a field group, not a record of its own.

    Records that carry it list it as a base; it has no slots itself, so it combines with another slotted
    base, and each record stays slotted."""

    __slots__ = ()
    market_price: float | None = None  # per share of ONE contract: market_value / (position x multiplier)
    market_value: float | None = None
    unrealized_pnl: float | None = None
    realized_pnl: float | None = None
    payload_time: datetime | None = None  # when IB sent it (UTC)
    daily_pnl: float | None = None  # IB's dailyPnL: today's P&L of the position

    def take_valuation(self, other: Valuation) -> None:
        """Copy another record's valuation into this one."""
        for name in VALUATION_FIELDS:
            setattr(self, name, getattr(other, name))

    def clear_valuation(self) -> None:
        """Forget the valuation (it valued a size no longer held)."""
        for name in VALUATION_FIELDS:
            setattr(self, name, None)


VALUATION_FIELDS = tuple(f.name for f in fields(Valuation))


@dataclass(slots=True)
class PositionRow(HeldContract):
    position: float | None = None
    market_price: float | None = None
    bid: float | None = None
    ask: float | None = None
    last: float | None = None
    market_value: float | None = None
    average_cost: float | None = None
    unrealized_pnl: float | None = None
    delta: float | None = None
    gamma: float | None = None
    vega: float | None = None
    theta: float | None = None
    implied_vol: float | None = None
    underlying_price: float | None = None
    source: str = "stream"  # stream | portfolio (a closed stream's last row) | batch
    event_time: datetime | None = None  # aware UTC; None means "now" (set when appended)
    multiplier: float | None = None
    prior_close: float | None = None  # IB's close tick (yesterday's close), streamed contracts
    daily_pnl: float | None = None  # today's P&L of the position (schemas.POSITION_ROW_COLUMNS)


@dataclass(slots=True)
class QueueItem(Valuation, HeldContract):
    # Fields: HeldContract's, Valuation's (IB's last valuation, part of the payload), then these.
    multiplier: int | None = None
    priority: int = DEFAULT_PRIORITY
    # Owned by the queue: what a caller sets here is ignored on insert.
    status: str = PENDING
    attempts: int = 0
    last_error: str | None = None
    queued_at: datetime | None = None
    processed_at: datetime | None = None
    updated_at: datetime | None = None
    # The payload (schemas.PAYLOAD_COLUMNS: these two and the Valuation); None = unknown, an insert keeps
    # the stored value.
    position: float | None = None
    average_cost: float | None = None

    def observation(self, event_time: datetime, position: float, source: str) -> PositionRow:
        """The payload as an observation at `position`; a closed position (0) carries no value."""
        held = bool(position)
        return PositionRow(
            **self.held_contract(),  # type: ignore[arg-type]
            position=position,
            market_price=self.market_price if held else None,
            market_value=self.market_value if held else None,
            average_cost=self.average_cost,
            unrealized_pnl=self.unrealized_pnl if held else None,
            source=source,
            event_time=event_time,
            multiplier=None if self.multiplier is None else float(self.multiplier),
            daily_pnl=self.daily_pnl if held else None,
        )


assert tuple(f.name for f in fields(PositionRow)) == tuple(POSITION_ROW_COLUMNS), "PositionRow != schema"
assert {f.name for f in fields(QueueItem)} == set(POSITION_QUEUE.columns), "QueueItem != schema"
assert set(VALUATION_FIELDS) < set(PAYLOAD_COLUMNS), "Valuation is part of the queue's payload"

_PRICE_FIELDS = tuple(
    name for name, dtype in POSITION_ROW_COLUMNS.items() if dtype == pl.Float64() and name != "strike"
)
_PAYLOAD_NUMBERS = tuple(name for name, dtype in PAYLOAD_COLUMNS.items() if dtype == pl.Float64())
_ITEM_FIELDS = frozenset(f.name for f in fields(QueueItem))


def _contract_record(row: HeldContract) -> dict[str, object]:
    """The account and contract columns, checked and normalised (validation.py's rules)."""
    sec_type = v.check_sec_type(row.sec_type)
    return {
        "account": v.check_account(row.account),
        "conid": v.check_conid(row.conid),
        "symbol": v.check_symbol(row.symbol),
        "sec_type": sec_type,
        "right": v.check_right(row.right, required=False),
        "strike": v.check_strike(row.strike, required=False, sec_type=sec_type),
        "expiry": v.check_expiry(row.expiry, required=False),
    }


def validated_record(row: PositionRow) -> dict[str, object]:
    """The row as a dict of column values, checked and normalised (NaN / IB max-double -> None)."""
    record = _contract_record(row)
    if not isinstance(row.source, str) or not row.source.strip():
        raise InvalidRowError("source", row.source, "must be a non-empty string")
    record["source"] = row.source.strip()
    record["event_time"] = v.check_time("event_time", row.event_time, required=False) or datetime.now(UTC)
    for name in _PRICE_FIELDS:
        record[name] = v.check_optional_number(name, getattr(row, name))
    multiplier = record["multiplier"]
    if multiplier is not None and multiplier <= 0:  # type: ignore[operator]
        raise InvalidRowError("multiplier", row.multiplier, "must be > 0 (or None: unknown)")
    return record


def validated_records(table: str, rows: Iterable[PositionRow]) -> list[dict[str, object]]:
    """Every row checked; the first bad one raises InvalidRowError naming the table and the row index."""
    records = []
    for index, row in enumerate(rows):
        try:
            records.append(validated_record(row))
        except InvalidRowError as exc:
            raise exc.at(table, index) from None
    return records


def history_frame(records: list[dict[str, object]], spec: TableSpec, written_at: datetime) -> pl.DataFrame:
    """Validated records as rows of a history table (`written_at` and the `event_date` partition added)."""
    frame = pl.DataFrame(records, schema=dict(POSITION_ROW_COLUMNS))
    frame = frame.with_columns(written_at=pl.lit(written_at), event_date=pl.col("event_time").dt.date())
    return conform(frame, spec)


def queue_item(raw: QueueItem | Mapping[str, object]) -> QueueItem:
    """A QueueItem as given, or built from a mapping of its fields (an unknown name is an InvalidRowError)."""
    if isinstance(raw, QueueItem):
        return raw
    unknown = set(raw) - _ITEM_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidRowError(name, raw[name], "is not a queue field")
    return QueueItem(**{"account": "", "conid": None, "symbol": None, **raw})  # type: ignore[arg-type]


def validated_queue_record(item: QueueItem, now: datetime) -> dict[str, object]:
    """A new or re-queued row as inserted at `now`: the caller's fields checked, the queue's own reset."""
    record = _contract_record(item)
    priority, multiplier = item.priority, item.multiplier
    if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
        raise InvalidRowError("priority", priority, "must be an integer >= 0 (0 = most urgent)")
    record.update(
        multiplier=None if multiplier is None else v.check_positive_int("multiplier", multiplier),
        priority=priority,
        status=PENDING,
        attempts=0,
        last_error=None,
        queued_at=now,
        processed_at=None,
        payload_time=v.check_time("payload_time", item.payload_time, required=False),
        updated_at=now,
    )
    for name in _PAYLOAD_NUMBERS:
        record[name] = v.check_optional_number(name, getattr(item, name))
    return record
