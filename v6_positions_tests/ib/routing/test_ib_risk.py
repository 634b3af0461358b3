"""The risk score orders legs the way a trader would: condor shorts before wings, near expiry before far,
near the money before far, bigger before smaller, a market that just moved before a quiet one."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from v6_positions.ib.routing.risk_score import LegRiskInput, rank, risk_score

NOW = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)  # 10:00 in New York
NEAR = date(2026, 12, 4)  # a week out
FAR = date(2027, 1, 15)


def _condor(expiry: date, first_conid: int, spot: float = 600.0, size: float = 10) -> list[LegRiskInput]:
    legs = (("P", 580, size), ("P", 590, -size), ("C", 610, -size), ("C", 620, size))
    return [
        LegRiskInput(first_conid + i, right, strike, expiry, 100, pos, spot=spot, implied_vol=0.15)
        for i, (right, strike, pos) in enumerate(legs)
    ]


def test_a_condors_short_strikes_outrank_its_wings() -> None:
    ranked = [s.conid for s in rank(_condor(NEAR, 1), NOW)]
    assert set(ranked[:2]) == {2, 3} and set(ranked[2:]) == {1, 4}


def test_near_expiry_outranks_far_expiry_strike_for_strike() -> None:
    ranked = [s.conid for s in rank(_condor(FAR, 11) + _condor(NEAR, 1), NOW)]
    for near, far in ((2, 12), (3, 13)):  # the shorts: same right, strike and size
        assert ranked.index(near) < ranked.index(far)
    assert set(ranked[:4]) == {2, 3, 12, 13}  # every short before any wing
    near_short, far_short = risk_score(_condor(NEAR, 1)[2], NOW), risk_score(_condor(FAR, 11)[2], NOW)
    assert near_short.days_to_expiry == pytest.approx(7.25, abs=0.01)  # to 16:00 New York on expiry day
    assert near_short.score > far_short.score


def test_an_at_the_money_0dte_leg_outranks_everything_and_a_far_0dte_wing_does_not() -> None:
    today = NOW.date()
    atm = LegRiskInput(99, "C", 601, today, 100, -10, spot=600, implied_vol=0.15)
    wing = LegRiskInput(98, "C", 640, today, 100, -10, spot=600, implied_vol=0.15)
    ranked = [s.conid for s in rank([*_condor(NEAR, 1), atm, wing], NOW)]
    assert ranked[0] == 99 and ranked[-1] == 98
    assert risk_score(wing, NOW).sigmas_from_strike > 4


def test_nearer_the_money_and_bigger_positions_score_higher() -> None:
    base = LegRiskInput(1, "P", 590, NEAR, 100, -10, spot=600, implied_vol=0.2)
    closer = replace(base, conid=2, strike=598)
    double = replace(base, conid=3, position=-20)
    assert risk_score(closer, NOW).score > risk_score(base, NOW).score
    assert risk_score(double, NOW).score == pytest.approx(2 * risk_score(base, NOW).score)
    short, long = risk_score(base, NOW), risk_score(replace(base, position=10), NOW)
    assert short.score == pytest.approx(1.25 * long.score)  # short premium weighs more
    assert short.dollar_move == pytest.approx(long.dollar_move)


def test_a_big_underlying_move_raises_the_score_and_a_quiet_one_does_not() -> None:
    leg = _condor(NEAR, 1)[1]
    calm = risk_score(replace(leg, underlying_move_sigma=0.6), NOW).score
    assert calm == pytest.approx(risk_score(leg, NOW).score)
    assert risk_score(replace(leg, underlying_move_sigma=-3.0), NOW).score == pytest.approx(3 * calm)


def test_ibs_greeks_are_used_when_sent_and_black_scholes_fills_in_when_not() -> None:
    leg = _condor(NEAR, 1)[2]  # short 610 call, spot 600
    computed = risk_score(leg, NOW)
    assert 0.1 < computed.delta < 0.4 and computed.gamma > 0
    sent = risk_score(replace(leg, delta=0.5, gamma=0.02), NOW)
    assert (sent.delta, sent.gamma) == (0.5, 0.02) and sent.score > computed.score
    put = risk_score(_condor(NEAR, 1)[1], NOW)
    assert -0.4 < put.delta < 0


def test_missing_inputs_never_make_a_leg_look_safe() -> None:
    known = LegRiskInput(1, "C", 640, NEAR, 100, -10, spot=600, implied_vol=0.15)  # far out of the money
    unknown_spot = replace(known, spot=None)  # before its first quote: treated as at the money
    assert risk_score(unknown_spot, NOW).score > 10 * risk_score(known, NOW).score
    assert risk_score(unknown_spot, NOW).sigmas_from_strike == 0.0
    no_iv = risk_score(replace(known, implied_vol=None), NOW)
    assert math.isfinite(no_iv.score) and no_iv.score > 0  # DEFAULT_IV stands in


def test_no_position_scores_zero_and_ties_break_by_expiry_then_conid() -> None:
    flat = [
        LegRiskInput(7, "C", 610, FAR, 100, 0, spot=600),
        LegRiskInput(5, "C", 610, NEAR, 100, 0, spot=600),
        LegRiskInput(6, "C", 610, NEAR, 100, 0, spot=600),
    ]
    ranked = rank(flat, NOW)
    assert [s.score for s in ranked] == [0.0, 0.0, 0.0] and [s.conid for s in ranked] == [5, 6, 7]


def test_an_expiring_leg_stays_finite() -> None:
    after_close = datetime(2026, 11, 27, 22, 0, tzinfo=UTC)
    score = risk_score(LegRiskInput(1, "P", 600, NOW.date(), 100, -1, spot=600), after_close)
    assert math.isfinite(score.score) and score.score > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"strike": 0.0}, "leg 1: strike=0.0"),
        ({"multiplier": 0}, "multiplier=0"),
        ({"right": "X"}, "right='X'"),
    ],
)
def test_bad_legs_are_refused_naming_the_field(change: dict, message: str) -> None:
    leg = replace(LegRiskInput(1, "C", 610, NEAR, 100, -1, spot=600), **change)
    with pytest.raises(ValueError, match=message):
        risk_score(leg, NOW)


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        risk_score(LegRiskInput(1, "C", 610, NEAR, 100, -1), datetime(2026, 11, 27, 15, 0))


def test_stream_inputs_take_ibs_model_greeks_and_clean_its_sentinels() -> None:
    from ib_async import Contract, OptionComputation, Ticker

    from v6_positions.ib.routing.risk_inputs import combined_position, leg_risk_input

    contract = Contract(
        conId=7,
        secType="OPT",
        symbol="SPY",
        lastTradeDateOrContractMonth="20261204",
        strike=610.0,
        right="C",
        multiplier="100",
    )
    ticker = Ticker(contract=contract)
    ticker.modelGreeks = OptionComputation(
        0, impliedVol=0.18, delta=0.31, optPrice=2.5, gamma=-2.0, vega=0.4, theta=-0.4, undPrice=603.0
    )
    leg = leg_risk_input(contract, -10, ticker.modelGreeks)
    assert leg is not None
    assert (leg.spot, leg.implied_vol, leg.delta, leg.gamma) == (603.0, 0.18, 0.31, None)  # -2 gamma: missing
    assert (leg.expiry, leg.multiplier, leg.right, leg.position) == (NEAR, 100.0, "C", -10.0)
    assert risk_score(leg, NOW).gamma > 0  # Black-Scholes fills the missing gamma in
    before_any_quote = leg_risk_input(contract, -10, None)
    assert before_any_quote is not None and before_any_quote.spot is None
    assert leg_risk_input(Contract(conId=8, secType="STK", symbol="SPY"), 100) is None
    with pytest.raises(ValueError, match="conid 9: lastTradeDateOrContractMonth='2026'"):
        leg_risk_input(Contract(conId=9, secType="OPT", lastTradeDateOrContractMonth="2026", strike=1), 1)
    assert combined_position([-3, -2]) == -5 and combined_position([4, -1]) == 5
