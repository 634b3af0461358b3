"""What a contract's loose IB fields mean: one home for "is this an option?", rights and multipliers.

IB spells a right "C", "CALL", "c", ... and sends the multiplier as text ("100", "" for stocks). Every
layer (lake validation, the IB adapters, the simulator, partition keys) asks these questions here, so
they all answer the same way. Imports nothing from the project: any layer may use it.
"""

from __future__ import annotations

import math

# Sec types whose contracts have a right, a strike and an expiry (and greeks).
OPTION_SEC_TYPES = frozenset({"OPT", "FOP", "WAR", "IOPT"})

_RIGHTS = {"C": "C", "P": "P", "CALL": "C", "PUT": "P"}
_OPTION_MULTIPLIER = 100.0


def is_option(sec_type: str | None) -> bool:
    """True for option-like sec types; a missing sec type counts as "OPT" (the account's usual holding)."""
    return (sec_type or "OPT").strip().upper() in OPTION_SEC_TYPES


def normalize_right(raw: object) -> str | None:
    """ "C"/"P" for any spelling of call/put (any case, CALL/PUT); None for blank or unknown text."""
    if not isinstance(raw, str):
        return None
    return _RIGHTS.get(raw.strip().upper())


def parse_multiplier(raw: object, sec_type: str | None = "OPT") -> float:
    """The contract multiplier as a number; IB's blank or bad text falls back to 100 (options) or 1."""
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        return _OPTION_MULTIPLIER if is_option(sec_type) else 1.0
    return value
