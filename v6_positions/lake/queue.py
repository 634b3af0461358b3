"""The position queue: contracts waiting for a batch refresh, one row per (account, conid).

Writes are MERGEs keyed by (account, conid), so re-queueing never duplicates and a retried write is
harmless. A MERGE that loses a commit race to another process is re-run (bounded, with backoff).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime

import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from v6_positions.lake import validation as v
from v6_positions.lake.errors import InvalidRowError
from v6_positions.lake.properties import ensure_properties
from v6_positions.lake.schemas import POSITION_QUEUE, QUEUE_PAYLOAD_FIELDS
from v6_positions.lake.tables import TableHandle, conform, frame_of, retry_on_conflict, table_uri
from v6_positions.lake.versions import VersionProbe

log = logging.getLogger(__name__)

PENDING, DONE, FAILED = "pending", "done", "failed"
STATUSES = (PENDING, DONE, FAILED)
# Priorities: 0 = active leg that did not fit the line budget, 1 = demoted after error 101, 2 = default.
DEFAULT_PRIORITY = 2

Key = tuple[str, int]
_NO_LIMIT = 2**32 - 1


@dataclass(slots=True)
class QueueItem:
    account: str
    conid: int
    symbol: str
    sec_type: str = "OPT"
    right: str | None = None
    strike: float | None = None
    expiry: str | None = None
    multiplier: int | None = None
    priority: int = DEFAULT_PRIORITY
    status: str = PENDING
    attempts: int = 0
    last_error: str | None = None
    queued_at: datetime | None = None
    processed_at: datetime | None = None
    position: float | None = None
    average_cost: float | None = None
    market_price: float | None = None
    market_value: float | None = None
    unrealized_pnl: float | None = None
    realized_pnl: float | None = None
    payload_time: datetime | None = None
    updated_at: datetime | None = None

    @property
    def key(self) -> Key:
        return (self.account, self.conid)


_ITEM_FIELDS = frozenset(f.name for f in fields(QueueItem))
_QUEUE_OWNED = ("status", "attempts", "last_error", "queued_at", "processed_at", "updated_at")
_CALLER_FIELDS = tuple(f.name for f in fields(QueueItem) if f.name not in _QUEUE_OWNED)
_NUMBER_PAYLOAD = tuple(f for f in QUEUE_PAYLOAD_FIELDS if f != "payload_time")


def _q(column: str) -> str:
    """A quoted SQL identifier: `right`, `position`, ... are SQL keywords."""
    return f'"{column}"'


# How a re-queue combines the stored row (t) with the incoming one (s). A row that was done starts a new
# wait (new queued_at, attempts reset); a row still waiting keeps its age and its better priority.
_WAS_DONE = f"t.status = '{DONE}'"
_UPSERT = {
    "symbol": "s.symbol",
    "sec_type": "s.sec_type",
    **{c: f"COALESCE(s.{_q(c)}, t.{_q(c)})" for c in ("right", "strike", "expiry", "multiplier")},
    "priority": f"CASE WHEN {_WAS_DONE} OR s.priority < t.priority THEN s.priority ELSE t.priority END",
    "status": f"'{PENDING}'",
    "attempts": f"CASE WHEN {_WAS_DONE} THEN 0 ELSE t.attempts END",
    "last_error": f"CASE WHEN {_WAS_DONE} THEN s.last_error ELSE t.last_error END",
    "queued_at": f"CASE WHEN {_WAS_DONE} THEN s.queued_at ELSE t.queued_at END",
    **{c: f"COALESCE(s.{_q(c)}, t.{_q(c)})" for c in QUEUE_PAYLOAD_FIELDS},
    "updated_at": "s.updated_at",
}
_UPSERT = {_q(column): expr for column, expr in _UPSERT.items()}
_KEY_MATCH = "t.account = s.account AND t.conid = s.conid"


def _validated_row(raw: Mapping[str, object], now: datetime) -> dict[str, object]:
    unknown = set(raw) - _ITEM_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidRowError(name, raw[name], "is not a queue field")
    sec_type = v.check_sec_type(raw.get("sec_type", "OPT"))
    priority = raw.get("priority", DEFAULT_PRIORITY)
    if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
        raise InvalidRowError("priority", priority, "must be an integer >= 0 (0 = most urgent)")
    multiplier = raw.get("multiplier")
    row: dict[str, object] = {
        "account": v.check_account(raw.get("account", "")),
        "conid": v.check_conid(raw.get("conid")),
        "symbol": v.check_symbol(raw.get("symbol")),
        "sec_type": sec_type,
        "right": v.check_right(raw.get("right"), required=False),
        "strike": v.check_strike(raw.get("strike"), required=False, sec_type=sec_type),
        "expiry": v.check_expiry(raw.get("expiry"), required=False),
        "multiplier": None if multiplier is None else v.check_positive_int("multiplier", multiplier),
        "priority": priority,
        "status": PENDING,
        "attempts": 0,
        "last_error": None,
        "queued_at": now,
        "processed_at": None,
        "payload_time": v.check_time("payload_time", raw.get("payload_time"), required=False),
        "updated_at": now,
    }
    for name in _NUMBER_PAYLOAD:
        row[name] = v.check_optional_number(name, raw.get(name))
    return row


def _as_mapping(item: QueueItem | Mapping[str, object]) -> Mapping[str, object]:
    if isinstance(item, QueueItem):
        # Only the fields a caller may set; status/attempts/times belong to the queue.
        return {name: getattr(item, name) for name in _CALLER_FIELDS}
    return item


def _dedupe(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per key, as if the rows had been inserted one by one in order."""
    keep_last_known = ("right", "strike", "expiry", "multiplier", *QUEUE_PAYLOAD_FIELDS)
    return frame.group_by(["account", "conid"], maintain_order=True).agg(
        pl.col("symbol", "sec_type", "status", "attempts", "last_error", "processed_at", "updated_at").last(),
        *[pl.col(c).drop_nulls().last() for c in keep_last_known],
        pl.col("priority").min(),
        pl.col("queued_at").first(),
    )


class PositionQueue:
    def __init__(
        self, root_uri: str, storage_options: dict[str, str] | None = None, max_attempts: int = 5
    ) -> None:
        self.root_uri = root_uri
        self.storage_options = storage_options
        self.max_attempts = max_attempts
        self._probe = VersionProbe(
            table_uri(root_uri, POSITION_QUEUE.name), storage_options, poll_interval_s=0.0
        )
        self._handle = TableHandle(root_uri, POSITION_QUEUE.name, storage_options)
        self._properties_checked = False
        self._lock = threading.Lock()  # the handle is shared by the methods of this queue

    def _table(self, *, create: bool) -> DeltaTable | None:
        """The queue at its newest version (caller holds the lock); None if absent and not `create`.

        The first open turns on what the queue relies on (change data feed, frequent checkpoints),
        also for a queue created before this version.
        """
        table = self._handle.latest(create=create)
        if table is not None and not self._properties_checked:
            ensure_properties(table, POSITION_QUEUE)
            self._properties_checked = True
        return table

    # -- writes --------------------------------------------------------------------------------------------
    def insert(
        self,
        conid: int,
        symbol: str,
        priority: int = DEFAULT_PRIORITY,
        *,
        account: str = "",
        sec_type: str = "OPT",
        right: str | None = None,
        strike: float | None = None,
        expiry: str | None = None,
        multiplier: int | None = None,
        position: float | None = None,
        average_cost: float | None = None,
        market_price: float | None = None,
        market_value: float | None = None,
        unrealized_pnl: float | None = None,
        realized_pnl: float | None = None,
        payload_time: datetime | None = None,
    ) -> None:
        """Queue one contract (idempotent upsert per (account, conid)); see insert_many."""
        self.insert_many(
            [
                {
                    "account": account,
                    "conid": conid,
                    "symbol": symbol,
                    "priority": priority,
                    "sec_type": sec_type,
                    "right": right,
                    "strike": strike,
                    "expiry": expiry,
                    "multiplier": multiplier,
                    "position": position,
                    "average_cost": average_cost,
                    "market_price": market_price,
                    "market_value": market_value,
                    "unrealized_pnl": unrealized_pnl,
                    "realized_pnl": realized_pnl,
                    "payload_time": payload_time,
                }
            ]
        )

    def insert_many(self, items: Iterable[QueueItem | Mapping[str, object]]) -> int:
        """Queue many contracts in ONE commit; returns the number of distinct keys written.

        Each key ends up pending with the newest payload (a None field keeps the stored value) and the
        better (lower) priority. Within the batch the last row wins. One invalid row refuses the whole
        batch (InvalidRowError naming the row index) and nothing is written.
        """
        now = datetime.now(UTC)
        rows = []
        for index, item in enumerate(items):
            try:
                rows.append(_validated_row(_as_mapping(item), now))
            except InvalidRowError as exc:
                raise exc.at(POSITION_QUEUE.name, index) from None
        if not rows:
            return 0
        source = conform(
            _dedupe(conform(pl.DataFrame(rows, infer_schema_length=None), POSITION_QUEUE)), POSITION_QUEUE
        )

        def merge() -> None:
            table = self._table(create=True)
            assert table is not None
            (
                table.merge(source, predicate=_KEY_MATCH, source_alias="s", target_alias="t")
                .when_matched_update(updates=_UPSERT)
                .when_not_matched_insert_all()
                .execute()
            )

        with self._lock:
            retry_on_conflict(merge, what=f"position_queue insert of {source.height} rows")
        log.debug("queued %d contracts", source.height)
        return source.height

    def mark_done(self, keys: Iterable[Key], *, updated_before: datetime | None = None) -> int:
        """Mark rows done; returns how many changed.

        `updated_before` (optional): skip rows re-queued after that instant (e.g. the time get_batch ran),
        so a payload that arrived while the batch was processed is not marked done unseen.
        """
        updates = {"status": f"'{DONE}'", "processed_at": "s.now", "last_error": "CAST(NULL AS STRING)"}
        return self._mark(keys, updates, None, updated_before, what="mark_done")

    def mark_failed(self, keys: Iterable[Key], error: str, *, updated_before: datetime | None = None) -> int:
        """Mark rows failed (attempts += 1); they are retried until attempts reaches max_attempts."""
        updates = {
            "status": f"'{FAILED}'",
            "processed_at": "s.now",
            "attempts": "t.attempts + 1",
            "last_error": "s.error",
        }
        return self._mark(keys, updates, str(error), updated_before, what="mark_failed")

    def _mark(
        self,
        keys: Iterable[Key],
        updates: dict[str, str],
        error: str | None,
        updated_before: datetime | None,
        *,
        what: str,
    ) -> int:
        unique = list(dict.fromkeys((str(account), int(conid)) for account, conid in keys))
        if not unique:
            return 0
        now = datetime.now(UTC)
        source = pl.DataFrame(
            {
                "account": [k[0] for k in unique],
                "conid": [k[1] for k in unique],
                "now": [now] * len(unique),
                "error": [error] * len(unique),
                "before": [updated_before or now] * len(unique),
            },
            schema={
                "account": pl.String,
                "conid": pl.Int64,
                "now": POSITION_QUEUE.columns["queued_at"],
                "error": pl.String,
                "before": POSITION_QUEUE.columns["queued_at"],
            },
        )
        guard = "t.updated_at <= s.before" if updated_before is not None else None

        def merge() -> int:
            table = self._table(create=False)
            if table is None:
                return 0
            metrics = (
                table.merge(source, predicate=_KEY_MATCH, source_alias="s", target_alias="t")
                .when_matched_update(updates={_q(c): e for c, e in updates.items()}, predicate=guard)
                .execute()
            )
            return int(metrics["num_target_rows_updated"])

        with self._lock:
            return retry_on_conflict(merge, what=f"position_queue {what} of {len(unique)} keys")

    def remove(self, keys: Iterable[Key]) -> int:
        """Delete these rows (closed or expired contracts) in one commit; returns how many were deleted."""
        source = _key_frame(keys)
        if source.is_empty():
            return 0

        def merge() -> int:
            table = self._table(create=False)
            if table is None:
                return 0
            metrics = (
                table.merge(source, predicate=_KEY_MATCH, source_alias="s", target_alias="t")
                .when_matched_delete()
                .execute()
            )
            return int(metrics["num_target_rows_deleted"])

        with self._lock:
            removed = retry_on_conflict(merge, what=f"position_queue remove of {source.height} keys")
        log.info("removed %d queue rows", removed)
        return removed

    # -- reads ---------------------------------------------------------------------------------------------
    def _frame(self) -> pl.DataFrame:
        with self._lock:
            table = self._table(create=False)
            return POSITION_QUEUE.empty_frame() if table is None else frame_of(table, POSITION_QUEUE)

    def _scan(self) -> pl.LazyFrame | None:
        """A lazy scan of the current version (filters and projections are pushed into the Parquet read)."""
        with self._lock:
            table = self._table(create=False)
        return None if table is None else pl.scan_delta(table)

    def _due(self) -> pl.Expr:
        return (pl.col("status") == PENDING) | (
            (pl.col("status") == FAILED) & (pl.col("attempts") < self.max_attempts)
        )

    def due(self, limit: int | None = None, *, priority: int | None = None) -> list[QueueItem]:
        """Due rows (pending, or failed with attempts < max_attempts): most urgent priority, then oldest.

        `limit=None` returns every due row. Only due rows are materialised: the filter runs in the scan.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit={limit!r}: must be >= 0 or None (all due rows)")
        scan = self._scan()
        if scan is None:
            return []
        scan = scan.filter(self._due())
        if priority is not None:
            scan = scan.filter(pl.col("priority") == priority)
        scan = scan.sort(["priority", "queued_at", "account", "conid"])
        if limit is not None and limit < _NO_LIMIT:  # polars indexes rows with 32 bits: a huge limit = all
            scan = scan.head(limit)
        frame = scan.select([pl.col(c).cast(t) for c, t in POSITION_QUEUE.columns.items()]).collect()
        return [QueueItem(**row) for row in frame.iter_rows(named=True)]

    def get_batch(self, priority: int | None = None, limit: int = 50) -> list[QueueItem]:
        """Due rows, most urgent first (see `due`); kept for callers of the seed's API."""
        return self.due(limit, priority=priority)

    def pending_count(self) -> int:
        """Rows `due` could still return (pending, or failed and retryable)."""
        scan = self._scan()
        if scan is None:
            return 0
        return int(scan.select("status", "attempts").filter(self._due()).select(pl.len()).collect().item())

    def _closed_or_expired(self, today: date) -> pl.LazyFrame | None:
        scan = self._scan()
        if scan is None:
            return None
        return scan.filter(
            ((pl.col("status") == DONE) & (pl.col("position") == 0))
            | (pl.col("expiry") < today.strftime("%Y%m%d"))
        ).sort(["account", "conid"])

    def closed_or_expired(self, today: date) -> list[Key]:
        """Keys the clean-up may remove: done with position 0 (closed), or expiry (YYYYMMDD) before today.

        A closed row that is still pending or failed is kept: its close has not been refreshed yet.
        """
        scan = self._closed_or_expired(today)
        if scan is None:
            return []
        frame = scan.select("account", "conid").collect()
        return list(zip(frame["account"].to_list(), frame["conid"].to_list(), strict=True))

    def closed_or_expired_items(self, today: date) -> list[QueueItem]:
        """The rows of `closed_or_expired` with their contract fields (to name their partitions)."""
        scan = self._closed_or_expired(today)
        if scan is None:
            return []
        frame = scan.select([pl.col(c).cast(t) for c, t in POSITION_QUEUE.columns.items()]).collect()
        return [QueueItem(**row) for row in frame.iter_rows(named=True)]

    def changes_since(self, version: int) -> tuple[int, pl.DataFrame]:
        """(current version, rows inserted or updated by the commits after `version`), newest state per key.

        Reads the table's change data feed, so the cost follows what changed, not the queue's size. Removed
        keys are not returned. `version=-1` (or a version older than the feed: before it was enabled, or
        cleaned up by maintenance) returns every current row, once.
        """
        if version < -1:
            raise ValueError(f"version={version!r}: must be a table version >= -1")
        with self._lock:
            table = self._table(create=False)
            if table is None:
                return -1, POSITION_QUEUE.empty_frame()
            current = table.version()
            if version == current:
                return current, POSITION_QUEUE.empty_frame()
            # version > current: the table was recreated behind the cursor; a full read below resyncs it.
            if 0 <= version < current:
                try:
                    feed = table.load_cdf(starting_version=version + 1, ending_version=current)
                    return current, _newest_changes(pl.DataFrame(feed.read_all()))
                except DeltaError as exc:
                    log.info(
                        "position_queue: no change feed from version %d (%s); reading it all", version, exc
                    )
            return current, frame_of(table, POSITION_QUEUE).sort(["account", "conid"])

    def keys(self, status: str | None = None) -> list[Key]:
        frame = self._with_status(status).sort(["account", "conid"])
        return list(zip(frame["account"].to_list(), frame["conid"].to_list(), strict=True))

    def items(self, status: str | None = None) -> list[QueueItem]:
        frame = self._with_status(status).sort(["account", "conid"])
        return [QueueItem(**row) for row in frame.iter_rows(named=True)]

    def version(self) -> int:
        return self._probe.current_version()

    def _with_status(self, status: str | None) -> pl.DataFrame:
        if status is not None and status not in STATUSES:
            raise ValueError(f"status={status!r}: must be one of {', '.join(STATUSES)}")
        frame = self._frame()
        return frame if status is None else frame.filter(pl.col("status") == status)


def _key_frame(keys: Iterable[Key]) -> pl.DataFrame:
    unique = list(dict.fromkeys((str(account), int(conid)) for account, conid in keys))
    return pl.DataFrame(
        {"account": [k[0] for k in unique], "conid": [k[1] for k in unique]},
        schema={"account": pl.String, "conid": pl.Int64},
    )


def _newest_changes(feed: pl.DataFrame) -> pl.DataFrame:
    """The last change per key from a change data feed; keys whose last change is a delete are left out."""
    if feed.is_empty():
        return POSITION_QUEUE.empty_frame()
    last = (
        feed.filter(pl.col("_change_type") != "update_preimage")
        .sort("_commit_version", maintain_order=True)
        .group_by(["account", "conid"], maintain_order=True)
        .last()
        .filter(pl.col("_change_type") != "delete")
    )
    return conform(last, POSITION_QUEUE).sort(["account", "conid"])
