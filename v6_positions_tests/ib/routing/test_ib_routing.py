"""The pure routing function, the line budget and the error-code sets."""

from __future__ import annotations

import pytest

from v6_positions.config import LineBudget
from v6_positions.ib.connection import message_codes as errors
from v6_positions.ib.routing.plan import (
    PRIORITY_DEFAULT,
    PRIORITY_DEMOTED,
    PRIORITY_UNFIT,
    Held,
    route,
)

ACCT = "DU1"


def held(conid: int, sec_type: str = "OPT", position: float = 1.0, account: str = ACCT) -> Held:
    return Held(account, conid, sec_type, position)


def test_budget_is_max_minus_reserved():
    budget = LineBudget(100, 10)
    assert budget.available == 90
    with pytest.raises(ValueError):
        LineBudget(10, 10)
    with pytest.raises(ValueError):
        LineBudget(0, 0)


def test_active_options_stream_everything_else_queues_at_default_priority():
    book = [held(1), held(2), held(3), held(4, "STK", 100)]
    plan = route(book, {1, 2}, LineBudget(100))
    assert plan.streamed == [1, 2]
    assert {(q.conid, q.priority) for q in plan.queued} == {(3, PRIORITY_DEFAULT), (4, PRIORITY_DEFAULT)}
    assert plan.reports == []


def test_over_budget_active_legs_are_queued_at_priority_zero_and_reported():
    book = [held(c) for c in range(1, 13)]
    plan = route(book, set(range(1, 13)), LineBudget(12, 2))
    assert len(plan.streamed) == 10
    unfit = [q for q in plan.queued if q.priority == PRIORITY_UNFIT]
    assert sorted(q.conid for q in unfit) == [11, 12]
    assert sorted(plan.unfit) == [11, 12]


def test_running_streams_keep_their_lines_when_a_new_leg_arrives():
    book = [held(c) for c in (5, 6, 7)]
    plan = route(book, {5, 6, 7}, LineBudget(2), currently_streamed=[7, 6])
    assert plan.streamed == [7, 6]
    assert plan.unfit == [5]


def test_zero_positions_non_streamable_types_and_unheld_legs():
    book = [held(1, position=0), held(2, "STK", 10), held(3, "FUT", 1)]
    plan = route(book, {1, 2, 9}, LineBudget(100), ("OPT",))
    assert plan.streamed == []
    assert 1 not in plan.streamed and 1 not in {q.conid for q in plan.queued}  # closed: neither
    assert {q.conid for q in plan.queued} == {2, 3}
    kinds = {(r.conid, r.kind) for r in plan.reports}
    assert kinds == {(2, "sec_type_not_streamed"), (1, "leg_not_held"), (9, "leg_not_held")}


def test_sec_types_are_configurable():
    plan = route([held(1, "FOP")], {1}, LineBudget(100), ("OPT", "FOP"))
    assert plan.streamed == [1]


def test_demoted_legs_queue_at_priority_one():
    plan = route([held(1), held(2)], {1, 2}, LineBudget(100), demoted={2: "max_tickers (101)"})
    assert plan.streamed == [1]
    assert [(q.conid, q.priority) for q in plan.queued] == [(2, PRIORITY_DEMOTED)]
    assert [(r.conid, r.kind) for r in plan.reports] == [(2, "demoted")]


def test_one_line_per_conid_across_accounts():
    plan = route([held(1, account="A"), held(1, account="B")], {1}, LineBudget(1))
    assert plan.streamed == [1]
    assert plan.queued == []


def test_duplicate_inputs_collapse():
    plan = route([held(1), held(1)], [1, 1], LineBudget(100), currently_streamed=[1, 1])
    assert plan.streamed == [1]


def test_a_line_limit_below_the_budget_queues_the_rest_at_priority_zero_with_the_reason():
    plan = route([held(1), held(2), held(3)], [1, 2, 3], 1, currently_streamed=[2],
                 full_reason="account full")
    assert plan.streamed == [2]
    assert {(d.conid, d.priority) for d in plan.queued} == {(1, 0), (3, 0)}
    assert {r.detail for r in plan.reports if r.kind == "over_budget"} == {"account full"}
    assert route([held(1)], [1], 0).streamed == []  # IB grants nothing: everything waits queued


def test_error_sets():
    assert 1100 in errors.CONNECTIVITY_LOST and 2110 in errors.CONNECTIVITY_LOST
    assert errors.RESTORED_DATA_LOST == {1101} and errors.RESTORED_DATA_KEPT == {1102}
    assert {200, 354} <= errors.SUBSCRIPTION_REJECTED
    # 101 is the account being full, 10090/10091 a partial-data warning, 10197 another session: none of
    # them condemns the contract.
    assert not {101, 1101, 10090, 10091, 10197} & errors.SUBSCRIPTION_REJECTED
    assert errors.describe(101) == "max_tickers" and errors.describe(10090) == "partial_market_data"
    assert errors.describe(326) == "client_id_in_use"
    assert errors.describe(99999) == "other"


def test_with_risk_ranks_the_riskiest_get_the_lines_and_a_running_stream_keeps_its_line_within_the_ratio():
    book = [held(c) for c in (1, 2, 3, 4)]
    rank = {1: 10.0, 2: 40.0, 3: 30.0, 4: 20.0}
    plan = route(book, {1, 2, 3, 4}, 2, rank=rank)
    assert plan.streamed == [2, 3] and sorted(plan.unfit) == [1, 4]
    # 4 runs: 20 x 1.5 = 30 ties 3's 30 and the running stream keeps its line; 2 (40) still beats both
    assert route(book, {1, 2, 3, 4}, 2, rank=rank, currently_streamed=[4]).streamed == [2, 4]
    # clearly riskier (1.5x the running leg's score and more) takes the line
    rank[3] = 31.0
    assert route(book, {1, 2, 3, 4}, 2, rank=rank, currently_streamed=[4]).streamed == [2, 3]
