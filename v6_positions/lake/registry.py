"""The strategy registry: which contracts are legs of an active strategy (and so deserve a streaming line)."""

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
    right: str
    strike: float
    expiry: str  # YYYYMMDD
    multiplier: int
    strategy_id: int
    active: bool
    updated_at: datetime


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
        self._reload_if_changed()
        return self._frame.sort("conid")

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
            self._frame = frame
            self._active = frozenset(frame.filter(pl.col("active"))["conid"].to_list())
            self._loaded_version = version
            self._loaded = True
        log.debug("registry reloaded at version %d: %d active legs", version, len(self._active))
