"""Which held contracts get a streaming line and which go to the batch queue — a pure function.

Rule: a non-zero position of a streamable sec type whose conid is an active registry leg is STREAMED if it
fits the line limit (the configured budget, or less when IB granted less: see `lines/ledger.py`); every
other held position is QUEUED with a priority:
  0  an active leg that did not fit the limit (most urgent for the batch refresh; streams once lines free up)
  1  an active leg demoted after IB rejected the contract's stream (200, no permission)
  2  everything else
Nothing is silently dropped: each deviation from "active leg -> stream" yields a `RoutingReport`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from v6_positions.config import LineBudget

PRIORITY_UNFIT = 0
PRIORITY_DEMOTED = 1
PRIORITY_DEFAULT = 2

ReportKind = Literal["over_budget", "demoted", "leg_not_held", "sec_type_not_streamed"]


@dataclass(slots=True, frozen=True)
class Held:
    """The routing view of one holding."""

    account: str
    conid: int
    sec_type: str
    position: float


@dataclass(slots=True, frozen=True)
class QueueDecision:
    account: str
    conid: int
    priority: int


@dataclass(slots=True, frozen=True)
class RoutingReport:
    conid: int
    kind: ReportKind
    detail: str = ""


@dataclass(slots=True)
class RoutingPlan:
    streamed: list[int] = field(default_factory=list)  # conids, one line each, in subscription order
    queued: list[QueueDecision] = field(default_factory=list)
    reports: list[RoutingReport] = field(default_factory=list)

    @property
    def unfit(self) -> list[int]:
        """Active legs that did not fit the lines, in routing order (they rotate or wait for a probe)."""
        return [report.conid for report in self.reports if report.kind == "over_budget"]


def route(
    held: Iterable[Held],
    active_conids: Collection[int],
    budget: LineBudget | int,
    stream_sec_types: Collection[str] = ("OPT",),
    *,
    currently_streamed: Iterable[int] = (),
    demoted: Mapping[int, str] | None = None,
    full_reason: str | None = None,
    rank: Mapping[int, float] | None = None,
    keep_ratio: float = 1.5,
) -> RoutingPlan:
    """Split the holdings into streams and queue entries.

    `budget` is the configured budget or a line limit (int, may be 0 when IB grants nothing). The
    `currently_streamed` go first when lines are short, so a new activation never evicts a running stream;
    the rest are taken in conid order, which keeps the result deterministic. `demoted` maps conid -> reason;
    `full_reason` is the report detail for legs that do not fit.

    With `rank` (conid -> risk score, see `risk_score.py`) the riskiest legs get the lines instead: a running
    stream counts `keep_ratio` times its score, so a leg only takes a running stream's line when it is
    clearly riskier (no churn at the boundary as greeks drift).
    """
    limit = budget.available if isinstance(budget, LineBudget) else max(0, int(budget))
    full_reason = full_reason or f"line budget {limit} is full"
    demoted = demoted or {}
    active = set(active_conids)
    plan = RoutingPlan()
    candidates: dict[int, list[Held]] = {}  # streamable active conid -> its holdings (one per account)
    held_conids: set[int] = set()

    for item in held:
        if item.position == 0:  # closed: neither streamed nor queued (its active leg is reported not held)
            continue
        held_conids.add(item.conid)
        if item.conid not in active:
            plan.queued.append(QueueDecision(item.account, item.conid, PRIORITY_DEFAULT))
        elif item.sec_type not in stream_sec_types:
            plan.queued.append(QueueDecision(item.account, item.conid, PRIORITY_DEFAULT))
            plan.reports.append(
                RoutingReport(
                    item.conid, "sec_type_not_streamed", f"sec type {item.sec_type!r} is not streamed"
                )
            )
        elif item.conid in demoted:
            plan.queued.append(QueueDecision(item.account, item.conid, PRIORITY_DEMOTED))
            if not any(r.conid == item.conid and r.kind == "demoted" for r in plan.reports):
                plan.reports.append(RoutingReport(item.conid, "demoted", demoted[item.conid]))
        else:
            candidates.setdefault(item.conid, []).append(item)

    running = [conid for conid in dict.fromkeys(currently_streamed) if conid in candidates]
    if rank is not None:
        kept = set(running)
        order = sorted(
            candidates,
            key=lambda c: (-rank.get(c, 0.0) * (keep_ratio if c in kept else 1.0), c not in kept, c),
        )
    else:
        order = running + sorted(set(candidates) - set(running))
    for conid in order:
        if len(plan.streamed) < limit:
            plan.streamed.append(conid)
            continue
        for item in candidates[conid]:
            plan.queued.append(QueueDecision(item.account, conid, PRIORITY_UNFIT))
        plan.reports.append(RoutingReport(conid, "over_budget", full_reason))

    for conid in sorted(active - held_conids):
        plan.reports.append(RoutingReport(conid, "leg_not_held", "active leg has no open position"))
    return plan
