"""Message ids, error codes and the server -> client message layouts at server version 176.

Every layout here was checked against ib_async 2.1.0's `decoder.py` (field counts matter: the client drops a
message whose fields do not unpack, silently).
"""

from __future__ import annotations

from enum import IntEnum

SERVER_VERSION = 176  # 176..178 differ only in order messages; official clients switch to protobuf at 201


class In(IntEnum):
    """Client -> server request ids."""

    REQ_MKT_DATA = 1
    CANCEL_MKT_DATA = 2
    PLACE_ORDER = 3
    CANCEL_ORDER = 4
    REQ_OPEN_ORDERS = 5
    REQ_ACCT_DATA = 6
    REQ_EXECUTIONS = 7
    REQ_IDS = 8
    REQ_CONTRACT_DATA = 9
    REQ_HISTORICAL_DATA = 20
    CANCEL_HISTORICAL_DATA = 25
    REQ_AUTO_OPEN_ORDERS = 15
    REQ_ALL_OPEN_ORDERS = 16
    REQ_MANAGED_ACCTS = 17
    EXERCISE_OPTIONS = 21
    REQ_CURRENT_TIME = 49
    REQ_GLOBAL_CANCEL = 58
    REQ_MARKET_DATA_TYPE = 59
    REQ_POSITIONS = 61
    REQ_ACCOUNT_SUMMARY = 62
    CANCEL_ACCOUNT_SUMMARY = 63
    CANCEL_POSITIONS = 64
    START_API = 71
    REQ_ACCOUNT_UPDATES_MULTI = 76
    CANCEL_ACCOUNT_UPDATES_MULTI = 77
    REQ_PNL = 92
    CANCEL_PNL = 93
    REQ_PNL_SINGLE = 94
    CANCEL_PNL_SINGLE = 95
    REQ_COMPLETED_ORDERS = 99


# Requests that would change orders: a read-only gateway refuses them (error 321) and counts them.
ORDER_REQUESTS = frozenset({In.PLACE_ORDER, In.CANCEL_ORDER, In.EXERCISE_OPTIONS, In.REQ_GLOBAL_CANCEL})


class Out(IntEnum):
    """Server -> client message ids."""

    TICK_PRICE = 1
    TICK_SIZE = 2
    ERR_MSG = 4
    ACCT_VALUE = 6
    PORTFOLIO_VALUE = 7
    ACCT_UPDATE_TIME = 8
    NEXT_VALID_ID = 9
    CONTRACT_DATA = 10
    MANAGED_ACCTS = 15
    HISTORICAL_DATA = 17
    TICK_OPTION_COMPUTATION = 21
    CURRENT_TIME = 49
    CONTRACT_DATA_END = 52
    OPEN_ORDER_END = 53
    ACCT_DOWNLOAD_END = 54
    EXECUTION_DATA_END = 55
    TICK_SNAPSHOT_END = 57
    MARKET_DATA_TYPE = 58
    POSITION_DATA = 61
    POSITION_END = 62
    ACCOUNT_SUMMARY = 63
    ACCOUNT_SUMMARY_END = 64
    ACCOUNT_UPDATE_MULTI = 73
    ACCOUNT_UPDATE_MULTI_END = 74
    TICK_REQ_PARAMS = 81
    PNL = 94
    PNL_SINGLE = 95
    COMPLETED_ORDERS_END = 102


class Tick(IntEnum):
    """Tick types the simulator sends (ib_async asserts on unknown ones)."""

    BID_SIZE = 0
    BID = 1
    ASK = 2
    ASK_SIZE = 3
    LAST = 4
    LAST_SIZE = 5
    VOLUME = 8
    CLOSE = 9
    BID_OPTION = 10
    ASK_OPTION = 11
    LAST_OPTION = 12
    MODEL_OPTION = 13


# IB's error codes and texts (https://interactivebrokers.github.io/tws-api/message_codes.html).
ERROR_TEXTS: dict[int, str] = {
    100: "Max rate of messages per second has been exceeded.",
    101: "Max number of tickers has been reached.",
    162: "Historical Market Data Service error message:",
    200: "No security definition has been found for the request",
    320: "Server error when reading an API client request.",
    321: "Error validating request.",
    322: "Error processing request.-'bW' : cause - Duplicate ticker id",
    326: "Unable to connect as the client id is already in use. Retry with a unique client id.",
    505: "Fatal Error: Unknown message id.",
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    2100: "API client has been unsubscribed from account data.",
    2104: "Market data farm connection is OK:usfarm",
    2106: "HMDS data farm connection is OK:ushmds",
    2158: "Sec-def data farm connection is OK:secdefnj",
    10090: "Part of requested market data is not subscribed. Subscription-independent ticks are still active."
    "Delayed market data is available.",
    10091: "Part of requested market data requires additional subscription for API. See link in "
    "'Market Data Connections' dialog for more details.Delayed market data is available.",
    10197: "No market data during competing live session",
}
READ_ONLY_TEXT = "Error validating request.-'bN' : cause - The API interface is currently in Read-Only mode."
CONNECTIVITY_CODES = frozenset({1100, 1101, 1102})
# What IB sends in an option computation for a value it did not compute (ib_async maps only some to None).
GREEK_SENTINELS = {
    "implied_vol": -1.0,
    "delta": -2.0,
    "opt_price": -1.0,
    "pv_dividend": -1.0,
    "gamma": -2.0,
    "vega": -2.0,
    "theta": -2.0,
    "und_price": -1.0,
}

Fields = list[object]


def error(req_id: int, code: int, text: str | None = None) -> Fields:
    # advancedOrderRejectJson (last) is required at server version >= 166; ib_async drops errors without it.
    return [Out.ERR_MSG, 2, req_id, code, text if text is not None else ERROR_TEXTS.get(code, ""), ""]


def next_valid_id(order_id: int) -> Fields:
    return [Out.NEXT_VALID_ID, 1, order_id]


def managed_accounts(accounts: list[str]) -> Fields:
    return [Out.MANAGED_ACCTS, 1, ",".join(accounts)]


def current_time(epoch_s: int) -> Fields:
    return [Out.CURRENT_TIME, 1, epoch_s]


def position(account: str, contract_fields: list[object], pos: float, avg_cost: float) -> Fields:
    """contract_fields: conId, symbol, secType, expiry, strike, right, multiplier, exchange, currency,
    localSymbol, tradingClass (11 fields)."""
    return [Out.POSITION_DATA, 3, account, *contract_fields, pos, avg_cost]


def position_end() -> Fields:
    return [Out.POSITION_END, 1]


def portfolio_value(
    contract_fields: list[object],
    pos: float,
    market_price: float,
    market_value: float,
    average_cost: float,
    unrealized_pnl: float,
    realized_pnl: float,
    account: str,
) -> Fields:
    """contract_fields: conId, symbol, secType, expiry, strike, right, multiplier, primaryExchange, currency,
    localSymbol, tradingClass (11 fields)."""
    return [
        Out.PORTFOLIO_VALUE,
        8,
        *contract_fields,
        pos,
        market_price,
        market_value,
        average_cost,
        unrealized_pnl,
        realized_pnl,
        account,
    ]


def account_value(key: str, value: str, currency: str, account: str) -> Fields:
    return [Out.ACCT_VALUE, 2, key, value, currency, account]


def account_time(hhmm: str) -> Fields:
    return [Out.ACCT_UPDATE_TIME, 1, hhmm]


def account_download_end(account: str) -> Fields:
    return [Out.ACCT_DOWNLOAD_END, 1, account]


def account_update_multi(
    req_id: int, account: str, model: str, key: str, value: str, currency: str
) -> Fields:
    return [Out.ACCOUNT_UPDATE_MULTI, 1, req_id, account, model, key, value, currency]


def account_update_multi_end(req_id: int) -> Fields:
    return [Out.ACCOUNT_UPDATE_MULTI_END, 1, req_id]


def account_summary(req_id: int, account: str, tag: str, value: str, currency: str) -> Fields:
    return [Out.ACCOUNT_SUMMARY, 1, req_id, account, tag, value, currency]


def account_summary_end(req_id: int) -> Fields:
    return [Out.ACCOUNT_SUMMARY_END, 1, req_id]


def open_order_end() -> Fields:
    return [Out.OPEN_ORDER_END, 1]


def completed_orders_end() -> Fields:
    return [Out.COMPLETED_ORDERS_END]


def execution_data_end(req_id: int) -> Fields:
    return [Out.EXECUTION_DATA_END, 1, req_id]


def market_data_type(req_id: int, data_type: int) -> Fields:
    return [Out.MARKET_DATA_TYPE, 1, req_id, data_type]


def tick_req_params(req_id: int, min_tick: float, bbo_exchange: str, snapshot_permissions: int) -> Fields:
    return [Out.TICK_REQ_PARAMS, req_id, min_tick, bbo_exchange, snapshot_permissions]


def tick_price(req_id: int, tick_type: int, price: float, size: float, attr_mask: int = 0) -> Fields:
    return [Out.TICK_PRICE, 6, req_id, tick_type, price, size, attr_mask]


def tick_size(req_id: int, tick_type: int, size: float) -> Fields:
    return [Out.TICK_SIZE, 6, req_id, tick_type, size]


def tick_option_computation(
    req_id: int,
    tick_type: int,
    implied_vol: float,
    delta: float,
    opt_price: float,
    pv_dividend: float,
    gamma: float,
    vega: float,
    theta: float,
    und_price: float,
) -> Fields:
    # No version field at server version >= 156; tickAttrib 1 = price based.
    return [
        Out.TICK_OPTION_COMPUTATION,
        req_id,
        tick_type,
        1,
        implied_vol,
        delta,
        opt_price,
        pv_dividend,
        gamma,
        vega,
        theta,
        und_price,
    ]


def tick_snapshot_end(req_id: int) -> Fields:
    return [Out.TICK_SNAPSHOT_END, 1, req_id]


def pnl_single(
    req_id: int, pos: float, daily_pnl: float, unrealized_pnl: float, realized_pnl: float, value: float
) -> Fields:
    return [Out.PNL_SINGLE, req_id, pos, daily_pnl, unrealized_pnl, realized_pnl, value]


def pnl(req_id: int, daily_pnl: float, unrealized_pnl: float, realized_pnl: float) -> Fields:
    return [Out.PNL, req_id, daily_pnl, unrealized_pnl, realized_pnl]


def historical_data(req_id: int, start: str, end: str, bars: list[tuple[object, ...]]) -> Fields:
    """Bars as (date, open, high, low, close, volume, wap, barCount). Below server version 196 the start and
    end of the period ride in this message (no historicalDataEnd 108) and no version field is sent (>= 124);
    IB's own decoder reads volume and wap as Decimal, ib_async as float: plain decimal text suits both."""
    return [Out.HISTORICAL_DATA, req_id, start, end, len(bars), *(field for bar in bars for field in bar)]


def contract_data_end(req_id: int) -> Fields:
    return [Out.CONTRACT_DATA_END, 1, req_id]
