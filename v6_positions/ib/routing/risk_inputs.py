"""What the stream knows about a leg, turned into `risk.LegRiskInput`: the held contract, its positions across
accounts, and IB's newest model greeks (with the underlying price) when it has any."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date
from typing import Any

from ib_async import Contract

from v6_positions.contracts import is_option, normalize_right, parse_multiplier
from v6_positions.ib.ib_values import clean_delta, clean_gamma, clean_implied_vol, clean_price
from v6_positions.ib.routing.risk_score import LegRiskInput


def combined_position(positions: Iterable[float]) -> float:
    """One leg held in several accounts: exposures do not net across accounts, so the sizes add up; the sign
    is the net's (short in both = short)."""
    values = list(positions)
    size = sum(abs(p) for p in values)
    return -size if sum(values) < 0 else size


def leg_risk_input(
    contract: Contract,
    position: float,
    model: Any | None = None,  # ib_async.OptionComputation: the ticker's modelGreeks (None before any quote)
    underlying_move_sigma: float | None = None,
) -> LegRiskInput | None:
    """The risk inputs of one option leg; None for what the score does not rank (stocks, futures)."""
    if not is_option(contract.secType):
        return None
    expiry = _expiry(contract.lastTradeDateOrContractMonth, contract.conId)
    return LegRiskInput(
        conid=int(contract.conId),
        right=normalize_right(contract.right) or "",
        strike=float(contract.strike),
        expiry=expiry,
        multiplier=parse_multiplier(contract.multiplier, contract.secType),
        position=float(position),
        spot=clean_price(model.undPrice) if model is not None else None,
        implied_vol=clean_implied_vol(model.impliedVol) if model is not None else None,
        delta=clean_delta(model.delta) if model is not None else None,
        gamma=clean_gamma(model.gamma) if model is not None else None,
        underlying_move_sigma=underlying_move_sigma
        if underlying_move_sigma is not None and math.isfinite(underlying_move_sigma)
        else None,
    )


def _expiry(text: str, conid: int) -> date:
    digits = (text or "")[:8]
    if len(digits) != 8 or not digits.isdigit():
        raise ValueError(f"conid {conid}: lastTradeDateOrContractMonth={text!r} is not YYYYMMDD")
    return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
