"""The account book: what the stream holds after reconnects, live position changes and FA accounts."""

from __future__ import annotations

from datetime import UTC, datetime

from ib_async import Contract, Position

from v6_positions.ib.account.book import AccountBook, mark_closed
from v6_positions.ib.account.holdings import apply_pnl


def option(conid: int, sec_type: str = "OPT") -> Contract:
    return Contract(conId=conid, symbol="SPY", secType=sec_type, multiplier="100", strike=500.0, right="C",
                    lastTradeDateOrContractMonth="20270115")


def position(conid: int, size: float, account: str = "DU1", sec_type: str = "OPT") -> Position:
    return Position(account, option(conid, sec_type), size, 120.0)


def test_a_reconnect_keeps_the_last_valuation_of_an_unchanged_size_and_returns_what_closed_meanwhile():
    book = AccountBook("", ("OPT",))
    assert book.rebuild([position(1, 2), position(2, -1), position(3, 5)]) == []
    valued_at = datetime.now(UTC)
    for conid in (1, 3):
        assert apply_pnl(book.holdings[("DU1", conid)], 300.0, 40.0, 0.0, valued_at)

    closed = book.rebuild([position(1, 3), position(3, 5), position(4, 0)])

    assert [h.conid for h in closed] == [2]
    assert sorted(book.holdings) == [("DU1", 1), ("DU1", 3)]  # a position of 0 is not held
    same = book.holdings[("DU1", 3)]
    assert same.position == 5 and same.market_value == 300.0 and same.payload_time == valued_at
    resized = book.holdings[("DU1", 1)]  # 2 -> 3: the old value priced 2 contracts, not 3
    assert resized.position == 3 and resized.market_value is None and resized.payload_time is None


def test_a_resize_forgets_the_old_valuation_and_a_close_is_stamped_now():
    book = AccountBook("", ("OPT",))
    book.rebuild([position(1, -5)])
    holding = book.holdings[("DU1", 1)]
    valued_at = datetime(2026, 6, 1, 15, 0, tzinfo=UTC)
    assert apply_pnl(holding, -600.0, 40.0, 0.0, valued_at)

    change = book.on_position(position(1, -2))
    assert change is not None and change.kind == "changed"
    assert (holding.position, holding.market_value, holding.payload_time) == (-2, None, None)

    assert apply_pnl(holding, -240.0, 16.0, 0.0, valued_at)
    closed = book.on_position(position(1, 0))
    assert closed is not None and closed.kind == "closed"
    before = datetime.now(UTC)
    mark_closed(closed.holding)
    assert closed.holding.position == 0 and closed.holding.market_value == 0.0
    assert closed.holding.payload_time is not None and closed.holding.payload_time >= before


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
