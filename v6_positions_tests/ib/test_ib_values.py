"""IB's sentinels are missing data and a one-sided quote is priced from IB's model, not a stale last —
first as pure functions, then on what the real ib_async client hands over from the simulator."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from ib_async import IB, Contract, OptionComputation

from v6_positions.ib.ib_values import (
    Greeks,
    choose_price,
    clean_delta,
    clean_gamma,
    clean_implied_vol,
    clean_number,
    clean_price,
    clean_theta,
    clean_vega,
    merge_greeks,
    price_with_source,
)
from v6_positions.simulator import SimulatorThread, load_book

SENTINEL_INPUTS = [
    None,
    float("nan"),
    float("inf"),
    -float("inf"),
    1.7976931348623157e308,
    2147483647,
    "x",
    True,
]


@pytest.mark.parametrize("value", SENTINEL_INPUTS)
def test_every_ib_sentinel_is_missing_for_every_cleaner(value) -> None:
    for clean in (
        clean_number,
        clean_price,
        clean_delta,
        clean_gamma,
        clean_vega,
        clean_theta,
        clean_implied_vol,
    ):
        assert clean(value) is None, (clean.__name__, value)


def test_option_computation_markers_minus_one_and_minus_two_are_missing() -> None:
    assert clean_price(-1) is None and clean_implied_vol(-1) is None  # iv, optPrice, pvDividend, undPrice
    assert clean_delta(-2) is None and clean_gamma(-2) is None
    assert clean_vega(-2.0) is None and clean_theta(-2.0) is None  # ib_async passes these two through
    # real values survive, including legitimately negative ones
    assert clean_theta(-0.0412) == -0.0412 and clean_theta(-2.5) == -2.5
    assert clean_delta(-0.31) == -0.31 and clean_vega(0.0) == 0.0 and clean_number(-125.5) == -125.5


def test_price_prefers_mid_then_ibs_model_then_last_then_close() -> None:
    assert price_with_source(1.0, 1.2, 5.0, 0.9, model=1.05) == (pytest.approx(1.1), "mid")
    # a far-OTM wing: no bid (-1 cleaned to None, or 0), a stale last from days ago, IB's model price
    assert price_with_source(None, 0.10, 1.85, 0.40, model=0.06) == (0.06, "model")
    assert price_with_source(0.0, 0.10, 1.85, 0.40, model=0.06) == (0.06, "model")
    assert price_with_source(None, None, 1.85, 0.40) == (1.85, "last")  # a stock: no model price
    assert price_with_source(1.3, 1.2, None, 0.40) == (0.40, "close")  # crossed quote is not a mid
    assert price_with_source(None, None, None, None) == (None, None)
    assert choose_price(None, 0.10, 1.85, 0.40, 0.06) == 0.06
    assert choose_price(1.0, 1.2, None, None) == pytest.approx(1.1)  # positional 4-argument form still works


def test_merge_greeks_fills_fields_the_model_did_not_compute_from_the_other_computations() -> None:
    model = OptionComputation(0, 0.31, 0.12, 0.06, 0.0, 0.004, -2.0, -2.0, 580.0)
    last = OptionComputation(0, 0.33, 0.13, 1.85, 0.0, 0.005, 0.021, -0.0123, 580.0)
    greeks = merge_greeks(model, None, last)
    assert greeks == Greeks(0.12, 0.004, 0.021, -0.0123, 0.31, 580.0, 0.06)
    alone = merge_greeks(model)
    assert alone.vega is None and alone.theta is None and alone.model_price == 0.06
    assert merge_greeks(None, last).model_price is None  # a last computation's optPrice is the last price
    assert merge_greeks(None) == Greeks()


def test_values_from_a_real_ticker_with_minus_two_greeks_and_a_one_sided_quote() -> None:
    book = load_book("demo")
    conids = sorted(c for (_, c), p in book.positions.items() if p.contract.sec_type == "OPT")
    wing, plain = conids[0], conids[1]
    with SimulatorThread(book) as sim:
        sim.set_quirks(wing, one_sided=True, stale_last=9.99, missing_greeks=["vega", "theta"])

        async def main() -> None:
            ib = IB()
            await ib.connectAsync("127.0.0.1", sim.port, clientId=31, readonly=True, timeout=4)
            try:
                tw = ib.reqMktData(Contract(conId=wing, exchange="SMART"))
                tp = ib.reqMktData(Contract(conId=plain, exchange="SMART"))
                deadline = time.monotonic() + 5
                while tw.modelGreeks is None or tp.modelGreeks is None or math.isnan(tp.bid):
                    assert time.monotonic() < deadline, "no ticks"
                    await asyncio.sleep(0.02)
                assert tw.modelGreeks.vega == -2.0  # what ib_async hands over
                greeks = merge_greeks(tw.modelGreeks, tw.lastGreeks, tw.bidGreeks, tw.askGreeks)
                assert greeks.vega is None and greeks.theta is None
                assert greeks.delta is not None and greeks.gamma is not None and greeks.model_price > 0
                price, source = price_with_source(
                    clean_price(tw.bid),
                    clean_price(tw.ask),
                    clean_price(tw.last),
                    clean_price(tw.close),
                    greeks.model_price,
                )
                assert source == "model" and price == greeks.model_price and price != 9.99
                plain_greeks = merge_greeks(tp.modelGreeks, tp.lastGreeks)
                assert plain_greeks.vega > 0 and plain_greeks.theta < 0
                price, source = price_with_source(
                    clean_price(tp.bid),
                    clean_price(tp.ask),
                    clean_price(tp.last),
                    None,
                    plain_greeks.model_price,
                )
                assert source == "mid" and tp.bid < price < tp.ask
            finally:
                ib.disconnect()

        asyncio.run(main())
        assert sim.stats()["orders_received"] == 0
