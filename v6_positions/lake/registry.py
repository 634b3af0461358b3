"""The strategy registry: which contracts are legs of an active strategy (and so deserve a streaming line).

Bots write this table directly; its contract is in schemas.py (next to STRATEGY_REGISTRY). Every read
validates the rows: broken ones are skipped and kept in `invalid_rows()` for the status line, the
`registry list` command and the registry_rows_valid asset check.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from v6_positions.lake import validation as v
from v6_positions.lake.errors import InvalidRowError
from v6_positions.lake.schemas import STRATEGY_REGISTRY
from v6_positions.lake.tables import TableHandle, conform, frame_of, retry_on_conflict, table_uri
from v6_positions.lake.versions import VersionProbe

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RegistryLeg:
    conid: int
    symbol: str
    sec_type: str
    right: str | None  # C or P; None only for sec types without one (STK, FUT, ...)
    strike: float | None  # > 0; None only for sec types without one
    expiry: str | None  # YYYYMMDD; None only for sec types without one
    multiplier: int
    strategy_id: int
    active: bool
    updated_at: datetime | None


@dataclass(slots=True, frozen=True)
class InvalidRegistryRow:
    """A registry row that breaks the table's contract: skipped by every reader, reported here."""

    conid: int | None  # None when the conid itself is what is broken
    field: str
    value: object
    reason: str

    def __str__(self) -> str:
        return f"conid {self.conid}: {self.field}={self.value!r}: {self.reason}"


class StrategyRegistry:
    """Reads and writes `strategy_registry`.

    `is_active` serves a cached set of active conids and reloads it only when the table's version moved
    (see VersionProbe: exact on local tables, at most `poll_interval_s` stale on object stores).
    """

    def __init__(
        self, root_uri: str, storage_options: dict[str, str] | None = None, *, poll_interval_s: float = 1.0
    ) -> None:
        self.root_uri = root_uri
        self.storage_options = storage_options
        self._uri = table_uri(root_uri, STRATEGY_REGISTRY.name)
        self._probe = VersionProbe(self._uri, storage_options, poll_interval_s)
        self._handle = TableHandle(root_uri, STRATEGY_REGISTRY.name, storage_options)
        self._lock = threading.RLock()  # guards the handle and the cache
        self._loaded_version = -1
        self._loaded = False
        self._active: frozenset[int] = frozenset()
        self._frame = STRATEGY_REGISTRY.empty_frame()
        self._invalid: list[InvalidRegistryRow] = []

    # -- reads ---------------------------------------------------------------------------------------------
    def is_active(self, conid: int) -> bool:
        self._reload_if_changed()
        return conid in self._active

    def active_conids(self) -> set[int]:
        self._reload_if_changed()
        return set(self._active)

    def active_legs(self) -> list[RegistryLeg]:
        self._reload_if_changed()
        frame = self._frame.filter(pl.col("active")).sort("conid")
        return [RegistryLeg(**row) for row in frame.iter_rows(named=True)]

    def all_legs(self) -> pl.DataFrame:
        """Every valid row (active or not), normalised, one per conid; invalid rows are in invalid_rows()."""
        self._reload_if_changed()
        return self._frame.sort("conid")

    def invalid_rows(self) -> list[InvalidRegistryRow]:
        """Rows of the current version that break the table's contract (skipped by every reader)."""
        self._reload_if_changed()
        return list(self._invalid)

    def version(self) -> int:
        """The table's current version (-1 if not created yet), read from storage, not from the cache."""
        return self._probe.current_version()

    def refresh(self) -> bool:
        """Reload when the table changed since the last load; True when it did."""
        if self._loaded and not self._probe.newer_than(self._loaded_version, force=True):
            return False
        before = self._loaded_version
        self._reload()
        return self._loaded_version != before

    # -- writes --------------------------------------------------------------------------------------------
    def add_active(
        self,
        conid: int,
        symbol: str,
        right: str,
        strike: float,
        expiry: str,
        strategy_id: int,
        *,
        sec_type: str = "OPT",
        multiplier: int = 100,
    ) -> None:
        """Upsert one leg by conid and mark it active."""
        try:
            row = {
                "conid": v.check_conid(conid),
                "symbol": v.check_symbol(symbol),
                "sec_type": v.check_sec_type(sec_type),
                "right": v.check_right(right, required=True),
                "strike": v.check_strike(strike, required=True),
                "expiry": v.check_expiry(expiry, required=True),
                "multiplier": v.check_positive_int("multiplier", multiplier),
                "strategy_id": v.check_int_at_least("strategy_id", strategy_id, 0),
                "active": True,
                "updated_at": datetime.now(UTC),
            }
        except InvalidRowError as exc:
            raise exc.at(STRATEGY_REGISTRY.name) from None
        source = conform(pl.DataFrame([row]), STRATEGY_REGISTRY)

        def merge() -> None:
            table = self._handle.latest(create=True)
            (
                table.merge(source, predicate="t.conid = s.conid", source_alias="s", target_alias="t")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )

        with self._lock:
            retry_on_conflict(merge, what=f"strategy_registry add_active conid={conid}")
        log.info("registry: conid %s (%s) active for strategy %s", conid, symbol, strategy_id)
        self._reload()

    def deactivate(self, conid: int) -> bool:
        """Mark a leg inactive; False when no active leg had this conid."""
        try:
            v.check_conid(conid)
        except InvalidRowError as exc:
            raise exc.at(STRATEGY_REGISTRY.name) from None
        source = pl.DataFrame(
            {"conid": [conid], "updated_at": [datetime.now(UTC)]},
            schema={"conid": pl.Int64, "updated_at": STRATEGY_REGISTRY.columns["updated_at"]},
        )

        def merge() -> int:
            table = self._handle.latest(create=False)
            if table is None:
                return 0
            metrics = (
                table.merge(source, predicate="t.conid = s.conid", source_alias="s", target_alias="t")
                .when_matched_update(
                    updates={"active": "false", "updated_at": "s.updated_at"}, predicate="t.active = true"
                )
                .execute()
            )
            return int(metrics["num_target_rows_updated"])

        with self._lock:
            changed = retry_on_conflict(merge, what=f"strategy_registry deactivate conid={conid}") > 0
        if changed:
            log.info("registry: conid %s deactivated", conid)
            self._reload()
        return changed

    # -- cache ---------------------------------------------------------------------------------------------
    def _reload_if_changed(self) -> None:
        if not self._loaded or self._probe.newer_than(self._loaded_version):
            self._reload()

    def _reload(self) -> None:
        with self._lock:
            table = self._handle.latest(create=False)
            if table is None:
                frame, version = STRATEGY_REGISTRY.empty_frame(), -1
            else:
                # The frame and the version come from the same snapshot, so the cache is never torn.
                frame, version = frame_of(table, STRATEGY_REGISTRY), table.version()
            frame, invalid = validate_rows(frame)
            new = [row for row in invalid if row not in self._invalid]
            self._frame = frame
            self._invalid = invalid
            self._active = frozenset(frame.filter(pl.col("active"))["conid"].to_list())
            self._loaded_version = version
            self._loaded = True
        for row in new:  # once per broken row, not on every reload
            log.warning("strategy_registry: skipping a row that breaks the table's contract: %s", row)
        log.debug("registry reloaded at version %d: %d active legs", version, len(self._active))


def validate_rows(frame: pl.DataFrame) -> tuple[pl.DataFrame, list[InvalidRegistryRow]]:
    """The valid rows of a registry frame (normalised, one per conid: the newest updated_at wins) and what
    is wrong with the others."""
    invalid: list[InvalidRegistryRow] = []
    newest: dict[int, dict[str, object]] = {}
    losers: list[dict[str, object]] = []
    for raw in frame.iter_rows(named=True):
        try:
            row = v.check_registry_row(raw)
        except InvalidRowError as exc:
            conid = raw.get("conid") if isinstance(raw.get("conid"), int) else None
            invalid.append(InvalidRegistryRow(conid, exc.field, exc.value, exc.reason))
            continue
        conid = int(row["conid"])  # type: ignore[call-overload]
        kept = newest.get(conid)
        if kept is None:
            newest[conid] = row
        elif _stamp(row) >= _stamp(kept):
            losers.append(kept)
            newest[conid] = row
        else:
            losers.append(row)
    for row in losers:
        winner = newest[int(row["conid"])]  # type: ignore[call-overload]
        invalid.append(
            InvalidRegistryRow(
                int(row["conid"]),  # type: ignore[call-overload]
                "conid",
                row["conid"],
                f"another row has this conid; the one updated at {winner['updated_at']} is used",
            )
        )
    valid = pl.DataFrame(list(newest.values()), schema=STRATEGY_REGISTRY.polars_schema)
    return valid, invalid


def _stamp(row: dict[str, object]) -> datetime:
    value = row["updated_at"]
    return value if isinstance(value, datetime) else datetime.min.replace(tzinfo=UTC)
