"""Coalesces position-queue writes: many refreshes of one contract between flushes become one row, and
every flush is ONE `insert_many` commit (a 2,000-position book is one commit, not 2,000)."""

from __future__ import annotations

import asyncio
import logging

from v6_positions.ib.holdings import Holding, HoldingKey
from v6_positions.lake.errors import InvalidRowError
from v6_positions.lake.queue import PositionQueue

log = logging.getLogger(__name__)

_OPTION_RIGHTS = {"C": "C", "P": "P", "CALL": "C", "PUT": "P"}


class QueueBuffer:
    def __init__(self, queue: PositionQueue) -> None:
        self.queue = queue
        self._rows: dict[HoldingKey, dict[str, object]] = {}
        self._written: dict[HoldingKey, tuple] = {}  # what the lake already has, to skip no-op refreshes
        self._flush_lock = asyncio.Lock()
        self.rows_written = 0
        self.commits = 0
        self.rows_rejected = 0
        self.flush_errors = 0

    def __len__(self) -> int:
        return len(self._rows)

    def put(self, holding: Holding, priority: int, *, force: bool = False) -> None:
        """Buffer the holding's latest payload; a key already buffered is merged (better priority wins).
        Without `force`, a payload identical to the one last written is skipped; routing changes force
        the write so the row is pending again."""
        row = queue_row(holding, priority)
        old = self._rows.get(holding.key)
        if old is not None:
            row["priority"] = min(int(old["priority"]), priority)  # type: ignore[call-overload]
        elif not force and self._written.get(holding.key) == _signature(row):
            return  # IB re-sent the same payload (the 3-minute portfolio push): nothing new to write
        self._rows[holding.key] = row


    async def flush(self) -> int:
        """Write everything buffered in one commit (in a worker thread). Keeps the rows if the lake fails."""
        async with self._flush_lock:
            if not self._rows:
                return 0
            rows, self._rows = self._rows, {}
            try:
                written = await asyncio.to_thread(self._insert, list(rows.values()))
            except Exception:
                self.flush_errors += 1
                for key, row in rows.items():
                    self._rows.setdefault(key, row)  # newer payloads buffered meanwhile win
                log.exception("position_queue write of %d rows failed; kept for the next flush", len(rows))
                return 0
            self.rows_written += written
            for key, row in rows.items():
                self._written[key] = _signature(row)
            return written

    def _insert(self, rows: list[dict[str, object]]) -> int:
        # One bad row refuses the whole batch: drop that row (logged) and write the rest.
        while rows:
            try:
                written = self.queue.insert_many(rows)
            except InvalidRowError as exc:
                if exc.row_index is None:
                    raise
                bad = rows.pop(exc.row_index)
                self.rows_rejected += 1
                log.error("position_queue refused conid=%s: %s; row dropped", bad.get("conid"), exc)
                continue
            self.commits += 1
            return int(written)
        return 0


def _signature(row: dict[str, object]) -> tuple:
    return tuple(value for name, value in row.items() if name != "payload_time")


def queue_row(holding: Holding, priority: int) -> dict[str, object]:
    """A position_queue row from a holding; IB's loose contract fields normalised to the queue's rules."""
    contract = holding.contract
    expiry = (contract.lastTradeDateOrContractMonth or "").strip()
    strike = contract.strike if isinstance(contract.strike, int | float) and contract.strike > 0 else None
    multiplier = holding.multiplier
    return {
        "account": holding.account,
        "conid": holding.conid,
        "symbol": contract.symbol or contract.localSymbol or str(holding.conid),
        "sec_type": (contract.secType or "OPT").upper(),
        "right": _OPTION_RIGHTS.get((contract.right or "").upper()),
        "strike": float(strike) if strike is not None else None,
        "expiry": expiry if len(expiry) == 8 and expiry.isdigit() else None,
        "multiplier": int(multiplier) if multiplier == int(multiplier) and multiplier > 0 else None,
        "priority": priority,
        "position": holding.position,
        "average_cost": holding.average_cost,
        "market_price": holding.market_price,
        "market_value": holding.market_value,
        "unrealized_pnl": holding.unrealized_pnl,
        "realized_pnl": holding.realized_pnl,
        "payload_time": holding.payload_time,
    }
