"""IB message codes grouped by what they mean to this project.

Logic tests membership in these named sets, never bare numbers (the nautilus_trader `error.py` idea).
Source: IB's "Message Codes" page.
"""

from __future__ import annotations

# The gateway lost its link to IB's servers (socket to us still open).
CONNECTIVITY_LOST = frozenset({1100, 2110})
# Link restored, market data subscriptions lost: every stream must be re-requested.
RESTORED_DATA_LOST = frozenset({1101})
# Link restored, subscriptions kept: nothing to do.
RESTORED_DATA_KEPT = frozenset({1102})
# "Max number of tickers has been reached": the ACCOUNT is full right now (lines are shared by every client,
# TWS and the phone app) — not a verdict on the contract. Shrinks the stream's budget; the leg waits queued.
MAX_TICKERS = frozenset({101})
# "Client id is already in use": often our own previous socket the gateway has not dropped yet, or a second
# stream started by mistake. The stream waits and retries the SAME id; helper clients move within their range.
CLIENT_ID_IN_USE = frozenset({326})
# "No security definition has been found for the request".
NO_SECURITY = frozenset({200})
# Market data not subscribed / not permitted for this contract: this contract will not stream.
NO_MARKET_DATA_PERMISSION = frozenset({354, 10089, 10167, 10168, 10186})
# Part of the requested data is not subscribed; the rest streams and the line is held: a warning only.
PARTIAL_MARKET_DATA = frozenset({10090, 10091})
# "No market data during competing live session": another login of the same user took the data.
COMPETING_SESSION = frozenset({10197})
# Pacing violation: too many messages per second.
PACING = frozenset({100})
# Another client took the account updates subscription (only one per gateway).
ACCOUNT_DATA_UNSUBSCRIBED = frozenset({2100})
# Harmless status lines about data farms.
FARM_STATUS = frozenset({2103, 2104, 2105, 2106, 2107, 2108, 2119, 2157, 2158})
# "Market data / HMDS / sec-def farm connection is OK": after a 1100 these say IB's data is flowing again.
FARM_OK = frozenset({2104, 2106, 2158})
# IB rejected one order; listed so nothing here ever mistakes order traffic for data errors.
ORDER_REJECTED = frozenset({201, 202, 321})

# A market data request that failed for good: stop streaming that contract and hand it to the queue
# (demoted until its leg is deactivated). 101 is not here: it is about the account, not the contract.
SUBSCRIPTION_REJECTED = NO_SECURITY | NO_MARKET_DATA_PERMISSION


def describe(code: int) -> str:
    """Short label for logs and reports."""
    for name, codes in _NAMES:
        if code in codes:
            return name
    return "other"


_NAMES: tuple[tuple[str, frozenset[int]], ...] = (
    ("connectivity_lost", CONNECTIVITY_LOST),
    ("restored_data_lost", RESTORED_DATA_LOST),
    ("restored_data_kept", RESTORED_DATA_KEPT),
    ("max_tickers", MAX_TICKERS),
    ("client_id_in_use", CLIENT_ID_IN_USE),
    ("no_security", NO_SECURITY),
    ("no_market_data_permission", NO_MARKET_DATA_PERMISSION),
    ("partial_market_data", PARTIAL_MARKET_DATA),
    ("competing_session", COMPETING_SESSION),
    ("pacing", PACING),
    ("account_data_unsubscribed", ACCOUNT_DATA_UNSUBSCRIBED),
    ("farm_status", FARM_STATUS),
    ("order_rejected", ORDER_REJECTED),
)
