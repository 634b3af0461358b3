"""Who gets the long-lived lines when active legs outnumber them: each leg's risk score (`risk_score.py`) from
its contract, its positions across accounts and IB's newest model greeks.

Scores are recomputed every RERANK_INTERVAL_S only (a new leg is scored at once): between re-ranks the
long-lived set stays put, so lines never churn on every tick of drifting greeks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from ib_async import Contract, Ticker

from v6_positions.ib.ib_values import clean_price
from v6_positions.ib.routing.risk_inputs import combined_position, leg_risk_input
from v6_positions.ib.routing.risk_score import risk_score

log = logging.getLogger(__name__)

# How often the legs are ranked again while some rotate (greeks and prices move the risk scores).
RERANK_INTERVAL_S = 10.0


@dataclass(slots=True)
class RankedLeg:
    """A held, streamable, active leg as the risk ranking sees it: its contract and its sizes per account."""

    contract: Contract
    positions: list[float]


class RiskRanking:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.scores: dict[int, float] = {}  # every held, streamable, active leg's score
        self._greeks: dict[int, object] = {}  # conid -> IB's newest model greeks (OptionComputation)
        self._ranked_at = -math.inf

    def rank(
        self, legs: Mapping[int, RankedLeg], ticker_of: Callable[[int], Ticker | None]
    ) -> dict[int, float]:
        """The score of every leg in `legs`; `ticker_of` finds the leg's ticker (streamed or rotating)."""
        now = datetime.now(UTC)
        due = self._clock() - self._ranked_at >= RERANK_INTERVAL_S
        if not due and legs.keys() == self.scores.keys():
            return self.scores
        if due:
            self._ranked_at = self._clock()
        # IB's newest model greeks per leg, kept across streaming, rotating and waiting: a score must not jump
        # back to "unknown, so at the money" whenever the leg's line changes hands.
        for conid in legs:
            model = getattr(ticker_of(conid), "modelGreeks", None)
            if model is not None:
                self._greeks[conid] = model
        for conid in [c for c in self._greeks if c not in legs]:
            del self._greeks[conid]
        spots: dict[str, float] = {}  # the underlying price from any leg's greeks, for legs not quoted yet
        for conid, model in self._greeks.items():
            spot = clean_price(model.undPrice)  # type: ignore[attr-defined]
            if spot is not None:
                spots[legs[conid].contract.symbol] = spot
        scores: dict[int, float] = {}
        for conid, leg in legs.items():
            if not due and conid in self.scores:
                scores[conid] = self.scores[conid]
                continue
            contract = leg.contract
            try:
                risk = leg_risk_input(contract, combined_position(leg.positions), self._greeks.get(conid))
                if risk is not None and risk.spot is None and contract.symbol in spots:
                    risk = replace(risk, spot=spots[contract.symbol])
                scores[conid] = risk_score(risk, now).score if risk is not None else 0.0
            except ValueError as exc:  # an odd contract is ranked last, never a reason to stop
                log.debug("conid=%s not ranked: %s", conid, exc)
                scores[conid] = 0.0
        self.scores = scores
        return scores
