"""Reconciliation: the book against the broker's own position list, and the repair of what differs.

Every trusted trading system checks its book against the broker. The broker's answer (IB's complete
reqPositions list, converted by the IB layer into `BrokerPositions`) is compared with `positions`:
- missing: held at the broker, absent from the book  -> re-queued at top priority (the batch writes it);
- wrong size: held with another size than the book's -> re-queued at top priority with the broker's size;
- ghost: open in the book, no longer held             -> a close written at the answer's time.
Only accounts the answer is evidence for are compared (`BrokerPositions.accounts`: followed accounts that
listed at least one position; an empty answer is not evidence of a close). A book row newer than the answer
is left alone: it may record a change the answer predates. Before comparing, the book is healed from history
(book_heal.py), so a difference found is a real one.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl

from v6_positions.lake.book_heal import HealOutcome, heal_book
from v6_positions.lake.history import write_rows
from v6_positions.lake.positions import read_positions
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.rows import Key, PositionRow, QueueItem

log = logging.getLogger(__name__)

RECONCILE_SOURCE = "reconcile"
KINDS = ("missing", "wrong_size", "ghost")
TOP_PRIORITY = 0
# Sizes are whole contracts or shares; anything closer than this is the same size (float noise).
_SIZE_TOLERANCE = 1e-9


@dataclass(slots=True)
class BrokerPositions:
    """The broker's complete position list at `answered_at`: the held contracts (as queue items: contract
    fields, position, average cost) of the accounts it is evidence for."""

    answered_at: datetime
    accounts: frozenset[str]  # accounts this answer proves the holdings of (complete, and not empty)
    held: dict[Key, QueueItem]
    unverified_accounts: tuple[str, ...] = ()  # followed accounts it listed nothing for: not compared


@dataclass(slots=True)
class Difference:
    kind: str  # missing | wrong_size | ghost
    account: str
    conid: int
    symbol: str
    book_position: float | None
    broker_position: float | None


@dataclass(slots=True)
class ReconcileOutcome:
    answered_at: datetime
    book_rows: int = 0  # open rows of the compared accounts
    broker_positions: int = 0
    matching: int = 0  # broker positions the book holds with the same size
    differences: list[Difference] = field(default_factory=list)
    too_new: int = 0  # book rows newer than the answer: not compared
    unverified_accounts: tuple[str, ...] = ()
    unverified_book_rows: int = 0  # open book rows in those accounts: neither confirmed nor closed
    requeued: int = 0
    closes_written: int = 0
    healed: HealOutcome | None = None

    def count(self, kind: str) -> int:
        return sum(1 for d in self.differences if d.kind == kind)

    @property
    def matches(self) -> bool:
        """Every compared position agrees and no open book row went unverified."""
        return not self.differences and not self.unverified_book_rows

    def summary(self) -> str:
        text = (
            f"book matches IB: {self.matching:,}/{self.broker_positions:,}; missing {self.count('missing')}, "
            f"wrong size {self.count('wrong_size')}, closed but open in the book {self.count('ghost')}"
        )
        if self.unverified_book_rows:
            text += (
                f"; {self.unverified_book_rows} book rows not verified (IB listed no position for "
                f"{', '.join(self.unverified_accounts)}: not taken as closes)"
            )
        return text


def compare(book: pl.DataFrame, broker: BrokerPositions) -> ReconcileOutcome:
    """What differs between the open book rows and the broker's list (nothing is written)."""
    outcome = ReconcileOutcome(
        answered_at=broker.answered_at,
        broker_positions=len(broker.held),
        unverified_accounts=broker.unverified_accounts,
    )
    compared = book.filter(pl.col("account").is_in(list(broker.accounts)))
    outcome.book_rows = compared.height
    unverified = book.filter(pl.col("account").is_in(list(broker.unverified_accounts)))
    outcome.unverified_book_rows = unverified.height
    in_book: dict[Key, dict] = {(r["account"], r["conid"]): r for r in compared.iter_rows(named=True)}
    for key, item in sorted(broker.held.items()):
        row = in_book.get(key)
        broker_size = float(item.position or 0.0)
        if row is None:
            outcome.differences.append(Difference("missing", *key, item.symbol, None, broker_size))
            continue
        if row["event_time"] is not None and row["event_time"] > broker.answered_at:
            outcome.too_new += 1
            continue
        book_size = row["position"]
        if book_size is None or abs(book_size - broker_size) > _SIZE_TOLERANCE:
            outcome.differences.append(Difference("wrong_size", *key, item.symbol, book_size, broker_size))
        else:
            outcome.matching += 1
    for key, row in sorted(in_book.items()):
        if key in broker.held:
            continue
        if row["event_time"] is not None and row["event_time"] > broker.answered_at:
            outcome.too_new += 1  # opened after the answer was taken
            continue
        outcome.differences.append(Difference("ghost", *key, row["symbol"], row["position"], None))
    return outcome


def reconcile_book(
    root_uri: str,
    broker: BrokerPositions,
    storage_options: dict[str, str] | None = None,
    *,
    repair: Collection[str] = KINDS,
) -> ReconcileOutcome:
    """Heal the book from history, compare it with the broker's list and repair the differences of the
    `repair` kinds (all by default; the stream's own connect writes every held position itself, so it
    repairs only ghosts, which nothing else would ever close)."""
    healed = heal_book(root_uri, storage_options)
    outcome = compare(read_positions(root_uri, storage_options), broker)
    outcome.healed = healed
    to_repair = [d for d in outcome.differences if d.kind in repair]
    if to_repair:
        _repair(root_uri, storage_options, broker, outcome, to_repair)
    level = logging.INFO if outcome.matches else logging.WARNING
    answered = broker.answered_at.isoformat(timespec="seconds")
    log.log(level, "reconciliation against IB's answer of %s: %s", answered, outcome.summary())
    return outcome


def _repair(
    root_uri: str,
    storage_options: dict[str, str] | None,
    broker: BrokerPositions,
    outcome: ReconcileOutcome,
    differences: list[Difference],
) -> None:
    ghosts = [d for d in differences if d.kind == "ghost"]
    book = read_positions(root_uri, storage_options)
    closes = list(_closes(book, ghosts, broker.answered_at))
    if closes:
        # Through history, like every write to the book: the close survives a rebuild and a heal.
        outcome.closes_written = write_rows(root_uri, "queued_positions", closes, storage_options)
    requeue = [
        _top_priority(broker.held[(d.account, d.conid)])
        for d in differences
        if d.kind in ("missing", "wrong_size")
    ]
    if requeue:
        outcome.requeued = PositionQueue(root_uri, storage_options).insert_many(requeue)


def _top_priority(item: QueueItem) -> QueueItem:
    """The broker's size, unvalued (its valuation is fetched by the batch), at the top of the queue."""
    return QueueItem(
        **item.held_contract(),  # type: ignore[arg-type]
        multiplier=item.multiplier,
        priority=TOP_PRIORITY,
        position=item.position,
        average_cost=item.average_cost,
    )


def _closes(book: pl.DataFrame, ghosts: Iterable[Difference], at: datetime) -> Iterable[PositionRow]:
    wanted = {(d.account, d.conid) for d in ghosts}
    for row in book.iter_rows(named=True):
        if (row["account"], row["conid"]) in wanted:
            yield PositionRow(
                account=row["account"], conid=row["conid"], symbol=row["symbol"], sec_type=row["sec_type"],
                right=row["right"], strike=row["strike"], expiry=row["expiry"], position=0.0,
                average_cost=row["average_cost"], source=RECONCILE_SOURCE, event_time=at,
            )  # fmt: skip
