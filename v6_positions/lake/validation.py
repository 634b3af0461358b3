"""Row rules shared by every writer. A broken row raises InvalidRowError naming the field and the value.

Normalisations (documented so callers can rely on them):
- right: "C"/"P" in any case, and "CALL"/"PUT", become "C"/"P"; "" means "no right" (stocks, futures).
- sec_type: upper-cased; must be one of KNOWN_SEC_TYPES.
- strike: for sec types without strikes (STK, FUT, ...), IB's 0.0 means "no strike" and becomes None.
- expiry: "" means none; otherwise a real calendar date spelled YYYYMMDD.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime

from v6_positions.contracts import is_option, normalize_right
from v6_positions.lake.errors import InvalidRowError

KNOWN_SEC_TYPES = frozenset(
    {
        "OPT",
        "FOP",
        "STK",
        "FUT",
        "IND",
        "CASH",
        "BAG",
        "WAR",
        "BOND",
        "CFD",
        "CMDTY",
        "FUND",
        "IOPT",
        "CRYPTO",
    }
)

def check_conid(conid: object) -> int:
    if isinstance(conid, bool) or not isinstance(conid, int) or conid <= 0:
        raise InvalidRowError("conid", conid, "must be a positive integer")
    return conid


def check_symbol(symbol: object) -> str:
    if not isinstance(symbol, str) or not symbol.strip():
        raise InvalidRowError("symbol", symbol, "must be a non-empty string")
    return symbol.strip()


def check_sec_type(sec_type: object) -> str:
    normalised = sec_type.strip().upper() if isinstance(sec_type, str) else sec_type
    if normalised not in KNOWN_SEC_TYPES:
        raise InvalidRowError(
            "sec_type", sec_type, f"unknown sec type; known: {', '.join(sorted(KNOWN_SEC_TYPES))}"
        )
    return normalised


def _absent(field: str, value: object, *, required: bool, rule: str) -> bool:
    """True when the value is missing (None or blank text); a missing required value breaks `rule`."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidRowError(field, value, rule)
        return True
    return False


def check_right(right: object, *, required: bool) -> str | None:
    if _absent("right", right, required=required, rule="must be C or P"):
        return None
    normalised = normalize_right(right)
    if normalised is None:
        raise InvalidRowError("right", right, "must be C or P (CALL/PUT accepted)")
    return normalised


def check_strike(strike: object, *, required: bool, sec_type: str = "OPT") -> float | None:
    if strike is None:
        if required:
            raise InvalidRowError("strike", strike, "must be a number > 0")
        return None
    if isinstance(strike, bool) or not isinstance(strike, int | float):
        raise InvalidRowError("strike", strike, "must be a number > 0")
    value = float(strike)
    if value == 0.0 and not required and not is_option(sec_type):
        return None  # IB reports strike 0.0 for contracts that have none
    if math.isnan(value) or math.isinf(value) or value <= 0:
        raise InvalidRowError("strike", strike, "must be a finite number > 0")
    return value


def check_expiry(expiry: object, *, required: bool) -> str | None:
    if _absent("expiry", expiry, required=required, rule="must be a date spelled YYYYMMDD"):
        return None
    if isinstance(expiry, date) and not isinstance(expiry, datetime):
        return expiry.strftime("%Y%m%d")
    text = expiry.strip() if isinstance(expiry, str) else str(expiry)
    if len(text) != 8 or not text.isdigit():
        raise InvalidRowError("expiry", expiry, "must be a date spelled YYYYMMDD")
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise InvalidRowError("expiry", expiry, "is not a calendar date (YYYYMMDD)") from None
    return text


def check_positive_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidRowError(field, value, "must be a positive integer")
    return value


def check_int_at_least(field: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidRowError(field, value, f"must be an integer >= {minimum}")
    return value


def check_optional_number(field: str, value: object) -> float | None:
    """Optional numbers: None stays None; NaN and IB's max-double sentinel mean "missing" and become None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRowError(field, value, "must be a number or None")
    number = float(value)
    if math.isnan(number) or math.isinf(number) or abs(number) >= 1.7976931348623157e308:
        return None
    return number


def check_account(account: object) -> str:
    if account is None:
        return ""
    if not isinstance(account, str):
        raise InvalidRowError("account", account, "must be a string")
    return account.strip()


def check_time(field: str, value: object, *, required: bool) -> datetime | None:
    """Timestamps are stored in UTC; a naive datetime is taken to be UTC already."""
    if value is None:
        if required:
            raise InvalidRowError(field, value, "must be a datetime")
        return None
    if not isinstance(value, datetime):
        raise InvalidRowError(field, value, "must be a datetime")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# Multipliers a registry row may leave empty (the `registry add` defaults); other sec types must say theirs.
DEFAULT_MULTIPLIERS = {"OPT": 100, "STK": 1}


def check_registry_row(row: Mapping[str, object]) -> dict[str, object]:
    """One `strategy_registry` row as a bot may have written it, normalised; InvalidRowError names the first
    field that breaks the table's contract (see schemas.STRATEGY_REGISTRY).

    Empty sec_type means OPT and an empty multiplier the `registry add` default (OPT 100, STK 1), as for a
    leg added with the CLI. Option sec types need right C/P, a strike > 0 and a YYYYMMDD expiry."""
    conid = check_conid(row.get("conid"))
    symbol = check_symbol(row.get("symbol"))
    raw_sec_type = row.get("sec_type")
    sec_type = "OPT" if raw_sec_type is None else check_sec_type(raw_sec_type)
    option = is_option(sec_type)
    right = check_right(row.get("right"), required=option)
    strike = check_strike(row.get("strike"), required=option, sec_type=sec_type)
    expiry = check_expiry(row.get("expiry"), required=option)
    multiplier = row.get("multiplier")
    if multiplier is None:
        if sec_type not in DEFAULT_MULTIPLIERS:
            raise InvalidRowError("multiplier", multiplier, f"required for sec_type {sec_type}")
        multiplier = DEFAULT_MULTIPLIERS[sec_type]
    else:
        multiplier = check_positive_int("multiplier", multiplier)
    strategy_id = check_int_at_least("strategy_id", row.get("strategy_id"), 0)
    active = row.get("active")
    if not isinstance(active, bool):
        raise InvalidRowError("active", active, "must be true or false")
    return {
        "conid": conid,
        "symbol": symbol,
        "sec_type": sec_type,
        "right": right,
        "strike": strike,
        "expiry": expiry,
        "multiplier": multiplier,
        "strategy_id": strategy_id,
        "active": active,
        "updated_at": check_time("updated_at", row.get("updated_at"), required=False),
    }
