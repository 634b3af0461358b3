"""IB's complete position list at one moment, and what it is evidence of.

reqPositions answers with every position of every managed account, then positionEnd. Only such a complete
answer can show that a position is gone, and only for an account it lists: an empty answer for an account
is not evidence of a close (a mistyped or changed V6_IB_ACCOUNT, a login that manages other accounts, or a
gateway that answered before it synced all look exactly like "holds nothing"). Closing everything on such an
answer would empty the book; keeping the rows until a non-empty answer says otherwise loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from ib_async import Position

from v6_positions.ib.account.book import account_error
from v6_positions.ib.account.holdings import holding_from_position, queue_item
from v6_positions.lake.reconcile import TOP_PRIORITY, BrokerPositions

Key = tuple[str, int]


class AccountNotManaged(RuntimeError):
    """V6_IB_ACCOUNT names an account this login does not manage: nothing can be read for it."""


@dataclass(slots=True)
class PositionList:
    """The non-zero positions of the followed accounts as IB listed them at `answered_at`."""

    answered_at: datetime
    followed: tuple[str, ...]  # accounts this answer covers (V6_IB_ACCOUNT, or every managed one)
    held: dict[Key, Position] = field(default_factory=dict)

    @classmethod
    def from_answer(
        cls, positions: Iterable[Position], managed: list[str], account: str, answered_at: datetime
    ) -> PositionList:
        """IB's full answer; raises AccountNotManaged (naming V6_IB_ACCOUNT) when the login lacks it."""
        error = account_error(account, managed)
        if error is not None:
            raise AccountNotManaged(error)
        followed = (account,) if account else tuple(sorted(managed))
        held = {
            (p.account, int(p.contract.conId)): p
            for p in positions
            if p.position != 0 and p.account in followed and p.contract.conId
        }
        return cls(answered_at=answered_at, followed=followed, held=held)

    def accounts_listed(self) -> set[str]:
        """Followed accounts with at least one position in the answer: the ones it is evidence for."""
        return {account for account, _ in self.held}

    def proves_closed(self, key: Key) -> bool:
        """True when this answer shows the contract is no longer held in its account."""
        account = key[0]
        return key not in self.held and account in self.accounts_listed()

    def unlisted_accounts(self) -> list[str]:
        """Followed accounts the answer listed nothing for (not evidence of anything)."""
        return sorted(set(self.followed) - self.accounts_listed())


def broker_positions(answer: PositionList) -> BrokerPositions:
    """The answer as the lake's reconciliation reads it (contract columns normalised like every queue row)."""
    held = {}
    for key, position in answer.held.items():
        item = queue_item(holding_from_position(position), TOP_PRIORITY)
        held[key] = item
    return BrokerPositions(
        answered_at=answer.answered_at,
        accounts=frozenset(answer.accounts_listed()),
        held=held,
        unverified_accounts=tuple(answer.unlisted_accounts()),
    )
