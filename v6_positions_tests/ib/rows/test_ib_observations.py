"""Values by IB's conventions: sentinels are missing, prices are mid / last / close."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from ib_async import Contract, OptionComputation, Position, Ticker

from v6_positions.contracts import parse_multiplier
from v6_positions.ib.account.holdings import apply_pnl, holding_from_position, queue_item
from v6_positions.ib.ib_values import choose_price, clean_delta, clean_number, clean_price
from v6_positions.ib.rows.observations import row_from_ticker
from v6_positions.lake.rows import validated_record

SENTINELS = [-1, 1.7976931348623157e308, 2147483647, math.nan, math.inf, None]
NOW = datetime(2026, 1, 2, 15, 30, tzinfo=UTC)


def option(conid: int = 11, exchange: str = "") -> Contract:
    return Contract(
        conId=conid, symbol="SPY", secType="OPT", lastTradeDateOrContractMonth="20261218", strike=600.0,
        right="C", multiplier="100", exchange=exchange, currency="USD",
    )


def make_ticker(**values) -> Ticker:
    ticker = Ticker(contract=option())  # Ticker.__post_init__ resets prices, so set them afterwards
    for name, value in values.items():
        setattr(ticker, name, value)
    return ticker


def holding(position: float = -2, avg: float = 150.0):
    return holding_from_position(Position("DU1", option(), position, avg))


@pytest.mark.parametrize("value", SENTINELS)
def test_sentinels_are_never_prices(value):
    assert clean_price(value) is None


def test_clean_number_keeps_negatives_but_not_sentinels():
    assert clean_number(-12.5) == -12.5
    assert clean_number(-1.7976931348623157e308) is None
    assert clean_delta(-2) is None and clean_delta(-0.4) == -0.4


def test_choose_price_order():
    assert choose_price(1.0, 1.2, 5.0, 9.0) == pytest.approx(1.1)
    assert choose_price(None, 1.2, 5.0, 9.0) == 5.0
    assert choose_price(1.3, 1.2, None, 9.0) == 9.0  # crossed book is not a valid bid/ask
    assert choose_price(None, None, None, None) is None


def test_row_from_ticker_values_the_position_like_ib():
    ticker = make_ticker(bid=1.0, ask=1.2, last=1.15, close=1.05, time=NOW)
    ticker.modelGreeks = OptionComputation(0, 0.2, 0.45, 1.1, 0.0, 0.01, 0.2, -0.05, 601.0)
    update = row_from_ticker(ticker, holding())
    assert update.market_price == pytest.approx(1.1)
    assert update.market_value == pytest.approx(1.1 * -2 * 100)
    assert update.unrealized_pnl == pytest.approx(-220.0 - 150.0 * -2)
    assert (update.delta, update.gamma, update.theta, update.underlying_price) == (0.45, 0.01, -0.05, 601.0)
    assert update.implied_vol == 0.2
    assert (update.account, update.expiry, update.strike) == ("DU1", "20261218", 600.0)
    assert update.source == "stream"
    assert update.event_time == NOW


def test_row_from_ticker_with_only_sentinels_has_no_price():
    ticker = make_ticker(bid=-1, ask=1.7976931348623157e308, last=math.nan, close=-1)
    ticker.modelGreeks = OptionComputation(0, None, None, None, None, math.nan, math.nan, math.nan, -1)
    update = row_from_ticker(ticker, holding())
    assert update.market_price is None and update.market_value is None and update.unrealized_pnl is None
    assert update.bid is None and update.ask is None
    assert update.gamma is None and update.vega is None and update.underlying_price is None
    row = update
    validated_record(row)  # the lake accepts it
    assert row.market_price is None


def test_a_pnl_single_answer_values_a_holding_per_share_and_sentinels_change_nothing():
    h = holding(position=-2, avg=150.0)
    assert apply_pnl(h, -220.0, 80.0, 1.7976931348623157e308, NOW)
    assert (h.market_price, h.market_value, h.unrealized_pnl, h.realized_pnl) == (1.1, -220.0, 80.0, None)
    assert h.payload_time == NOW
    later = datetime(2026, 1, 2, 16, 0, tzinfo=UTC)
    assert not apply_pnl(h, 1.7976931348623157e308, 0.0, 0.0, later)  # IB's "not computed"
    assert (h.market_value, h.payload_time) == (-220.0, NOW)


def test_multiplier_parsing():
    assert parse_multiplier("100") == 100
    assert parse_multiplier("", "STK") == 1
    assert parse_multiplier("", "OPT") == 100


def test_queue_item_normalises_loose_contract_fields():
    h = holding()
    h.contract.lastTradeDateOrContractMonth = "202612"  # month-only expiry: not a date
    h.contract.right = "CALL"
    row = queue_item(h, 0)
    assert row.expiry is None and row.right == "C" and row.multiplier == 100 and row.priority == 0


def test_a_one_sided_wing_is_priced_from_the_model_and_minus_two_greeks_are_missing():
    model = OptionComputation(0, 0.45, -0.03, 0.07, 0.0, -2.0, -2.0, -2.0, 600.0)  # vega/theta/gamma: -2
    ticker = make_ticker(bid=-1.0, ask=0.10, last=0.55, modelGreeks=model)  # no bid; `last` is stale
    update = row_from_ticker(ticker, holding(position=-2, avg=150.0), NOW)
    assert update.market_price == 0.07  # IB's model price, not the stale 0.55
    assert update.market_value == pytest.approx(0.07 * -2 * 100)
    assert (update.delta, update.gamma, update.vega, update.theta) == (-0.03, None, None, None)
    assert update.bid is None and update.ask == 0.10
