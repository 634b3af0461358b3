"""The account book: what the stream holds after reconnects, live position changes and FA accounts."""

from __future__ import annotations

from datetime import UTC, datetime

from ib_async import Contract, Position

from v6_positions.ib.account import AccountBook
from v6_positions.ib.holdings import apply_pnl


def option(conid: int, sec_type: str = "OPT") -> Contract:
    return Contract(conId=conid, symbol="SPY", secType=sec_type, multiplier="100", strike=500.0, right="C",
                    lastTradeDateOrContractMonth="20270115")


def position(conid: int, size: float, account: str = "DU1", sec_type: str = "OPT") -> Position:
    return Position(account, option(conid, sec_type), size, 120.0)


def test_a_reconnect_keeps_the_last_valuation_and_returns_what_closed_meanwhile():
    book = AccountBook("", ("OPT",))
    assert book.rebuild([position(1, 2), position(2, -1), position(3, 5)]) == []
    valued = book.holdings[("DU1", 1)]
    assert apply_pnl(valued, 300.0, 40.0, 0.0, datetime.now(UTC))

    closed = book.rebuild([position(1, 3), position(3, 5), position(4, 0)])

    assert [h.conid for h in closed] == [2]
    assert sorted(book.holdings) == [("DU1", 1), ("DU1", 3)]  # a position of 0 is not held
    fresh = book.holdings[("DU1", 1)]
    assert fresh.position == 3 and fresh.market_value == 300.0 and fresh.unrealized_pnl == 40.0


def test_live_changes_say_what_changed_and_other_accounts_are_ignored():
    book = AccountBook("DU1", ("OPT",))
    book.rebuild([position(1, 2)])

    opened = book.on_position(position(2, 1))
    changed = book.on_position(position(1, 4))
    closed = book.on_position(position(1, 0))

    assert opened is not None and (opened.kind, opened.holding.conid) == ("opened", 2)
    assert changed is not None and (changed.kind, changed.holding.position) == ("changed", 4)
    assert closed is not None and (closed.kind, closed.holding.conid) == ("closed", 1)
    assert book.on_position(position(9, 1, account="DU2")) is None  # V6_IB_ACCOUNT=DU1 follows DU1 only
    assert sorted(book.holdings) == [("DU1", 2)]


def test_one_leg_in_two_accounts_is_ranked_once_with_both_sizes():
    book = AccountBook("", ("OPT",))
    stock = position(2, 1, sec_type="STK")
    book.rebuild([position(1, 2, "DU1"), position(1, 3, "DU2"), stock, position(3, 1)])

    legs = book.ranked_legs({1, 2})

    assert list(legs) == [1]  # 2 is a stock (never streamed), 3 is not active
    assert sorted(legs[1].positions) == [2, 3]
    assert book.accounts() == ["DU1", "DU2"]


def test_an_account_this_login_does_not_manage_is_named_in_the_error():
    error = AccountBook("DU9", ("OPT",)).check_accounts(["DU1", "DU2"])
    assert error is not None and "V6_IB_ACCOUNT='DU9'" in error and "DU1, DU2" in error
    assert AccountBook("", ("OPT",)).check_accounts(["DU1", "DU2"]) is None
