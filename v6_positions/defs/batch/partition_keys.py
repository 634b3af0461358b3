"""The dynamic partitions of `queued_positions` (one per queued contract) and their keys.

The supervisor sensor adds keys, the batch schedule requests ranges of them and the asset reads them back, so
all three import this one definition and the key helpers next to it.

Key format: `<account>-<symbol>-<expiry>-<right>-<strike>-<conid>` for options (`contracts.is_option`, e.g.
`DU1000001-SPY-20261218-C-600-123456`), `<account>-<symbol>-<sec_type>-<conid>` for anything else. The account
is the first dash-separated token and the conid the last, so both can be recovered from the key; the other
tokens are for the reader of the UI.
"""

from __future__ import annotations

import re

import dagster as dg

from v6_positions.contracts import is_option

queued_contracts = dg.DynamicPartitionsDefinition(name="queued_contracts")

# Dashes separate the tokens; anything a symbol could carry that would blur them is replaced.
_UNSAFE = re.compile(r"[^A-Za-z0-9._]+")
_NO_ACCOUNT = "ANY"


def _token(value: object) -> str:
    text = _UNSAFE.sub("_", str(value).strip())
    return text.strip("_") or "NA"


def _strike_token(strike: float | None) -> str:
    if strike is None:
        return "NA"
    return f"{strike:g}" if float(strike) != int(strike) else str(int(strike))


def contract_partition_key(
    account: str,
    conid: int,
    symbol: str,
    sec_type: str | None = "OPT",
    right: str | None = None,
    strike: float | None = None,
    expiry: str | None = None,
) -> str:
    """The readable, stable partition key of one queued contract."""
    head = _token(account) if account else _NO_ACCOUNT
    if is_option(sec_type):
        middle = [_token(symbol), _token(expiry or "NA"), _token(right or "NA"), _strike_token(strike)]
    else:
        middle = [_token(symbol), _token(sec_type)]
    return "-".join([head, *middle, str(int(conid))])


def contract_from_key(key: str) -> tuple[str, int]:
    """`(account, conid)` of a partition key; raises ValueError for a key this module did not make."""
    head, _, tail = key.partition("-")
    conid_text = key.rsplit("-", 1)[-1]
    if not tail or not conid_text.isdigit():
        raise ValueError(f"not a queued-contract partition key: {key!r}")
    return ("" if head == _NO_ACCOUNT else head), int(conid_text)
