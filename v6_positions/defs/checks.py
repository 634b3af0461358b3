"""Asset checks: what must hold for the book to be trusted. Each one fails when its condition breaks.

Lines in use come from the live stream run's own report: the run stamps `v6/lines-in-use` next to its
heartbeat (see `stream/heartbeat.py`), so the check reads what the streamer holds right now without touching
IB. A stream run that is not alive holds no lines (IB frees them when the socket closes).
"""

import time
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl

from v6_positions.defs.assets import position_queue, positions, streamed_positions
from v6_positions.defs.metadata import age_seconds
from v6_positions.defs.resources import HealthThresholds, IBResource, LakeResource, StreamSupervision
from v6_positions.defs.stream.heartbeat import BUDGET_TAG, LINES_TAG, ROTATION_BOUND_TAG, judge_stream_runs
from v6_positions.lake.errors import LakeSchemaError
from v6_positions.lake.positions import read_positions
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.registry import RegistryLeg, StrategyRegistry
from v6_positions.lake.schemas import HISTORY_TABLES
from v6_positions.lake.tables import open_table, table_uri


@dg.asset_check(
    asset=streamed_positions.key, description="Lines the stream holds <= the configured line budget."
)
def lines_within_budget(
    context: dg.AssetCheckExecutionContext, ib: IBResource, supervision: StreamSupervision
) -> dg.AssetCheckResult:
    states = judge_stream_runs(
        context.instance, ib.gateway, stale_after_s=supervision.stale_after_s, startup_grace_s=0.0
    )
    live = next((s for s in states if s.alive and s.has_beaten), None)
    if live is None:
        return dg.AssetCheckResult(
            passed=True,
            metadata={"lines_in_use": 0, "line_budget": ib.line_budget, "stream_run": "none alive"},
        )
    run = context.instance.get_run_by_id(live.run_id)
    tags = run.tags if run is not None else {}
    lines = int(tags.get(LINES_TAG, "0"))
    return dg.AssetCheckResult(
        passed=lines <= ib.line_budget,
        metadata={
            "lines_in_use": lines,
            "line_budget": ib.line_budget,
            "streamer_budget": int(tags.get(BUDGET_TAG, "-1")),
            "stream_run": live.run_id,
            "heartbeat_age_s": round(live.age_s(time.time()), 1),
        },
    )


@dg.asset_check(
    asset=streamed_positions.key,
    description="Every active leg the account holds has a row (stream or batch) within the freshness window.",
)
def active_legs_fresh(lake: LakeResource, thresholds: HealthThresholds) -> dg.AssetCheckResult:
    active = StrategyRegistry(lake.root_uri, lake.storage_options).active_conids()
    now = datetime.now(UTC)
    # event_date is the UTC date of event_time; yesterday's partition covers any window under a day.
    newest = newest_rows(lake, active, since=now.date() - timedelta(days=1))
    ages = {int(c): age_seconds(t, now) for c, t in newest.select("conid", "event_time").iter_rows()}
    closed = set(newest.filter(pl.col("position") == 0)["conid"].to_list())
    # A leg the book holds but with no row since yesterday is judged by the book's (older) row: it is stale,
    # not forgotten.
    book = read_positions(lake.root_uri, lake.storage_options).filter(pl.col("conid").is_in(list(active)))
    for conid, event_time in book.select("conid", "event_time").iter_rows():
        ages.setdefault(int(conid), age_seconds(event_time, now))
    held = {conid: age for conid, age in ages.items() if conid not in closed}
    stale = {conid: age for conid, age in held.items() if age is None or age > thresholds.freshness_window_s}
    return dg.AssetCheckResult(
        passed=not stale,
        metadata={
            "active_legs": len(active),
            "held_active_legs": len(held),
            "stale_legs": len(stale),
            "stale_conids": ", ".join(f"{c} ({a}s)" for c, a in sorted(stale.items())) or "none",
            "oldest_age_s": max((a for a in held.values() if a is not None), default=None),
            "freshness_window_s": thresholds.freshness_window_s,
        },
    )


@dg.asset_check(
    asset=streamed_positions.key,
    description="Active legs rotating through the line pool stay within twice the stream's staleness bound.",
)
def rotating_legs_within_bound(
    context: dg.AssetCheckExecutionContext,
    lake: LakeResource,
    ib: IBResource,
    supervision: StreamSupervision,
) -> dg.AssetCheckResult:
    states = judge_stream_runs(
        context.instance, ib.gateway, stale_after_s=supervision.stale_after_s, startup_grace_s=0.0
    )
    live = next((s for s in states if s.alive and s.has_beaten), None)
    run = context.instance.get_run_by_id(live.run_id) if live is not None else None
    raw = run.tags.get(ROTATION_BOUND_TAG, "") if run is not None else ""
    if not raw:
        return dg.AssetCheckResult(
            passed=True, metadata={"rotation": "no leg rotates" if run else "no stream run alive"}
        )
    bound = float(raw)
    active = StrategyRegistry(lake.root_uri, lake.storage_options).active_conids()
    now = datetime.now(UTC)
    newest = newest_rows(lake, active, since=now.date() - timedelta(days=1))
    ages = {
        int(c): age_seconds(t, now)
        for c, t, position in newest.select("conid", "event_time", "position").iter_rows()
        if position != 0
    }
    late = {conid: age for conid, age in ages.items() if age is not None and age > 2 * bound}
    return dg.AssetCheckResult(
        passed=not late,
        metadata={
            "rotation_bound_s": bound,
            "fail_above_s": round(2 * bound, 1),
            "legs_with_rows": len(ages),
            "legs_past_2x_bound": len(late),
            "late_conids": ", ".join(f"{c} ({a}s)" for c, a in sorted(late.items())[:50]) or "none",
            "oldest_age_s": max((a for a in ages.values() if a is not None), default=None),
            "stream_run": live.run_id if live is not None else None,
        },
    )


def newest_rows(lake: LakeResource, conids: set[int], since: date) -> pl.DataFrame:
    """Newest history row per conid (stream or batch) among `conids`; reads recent date partitions only."""
    frames = []
    for name in HISTORY_TABLES:
        if not conids or open_table(lake.root_uri, name, lake.storage_options) is None:
            continue
        frames.append(
            pl.scan_delta(table_uri(lake.root_uri, name), storage_options=lake.storage_options)
            .filter((pl.col("event_date") >= since) & pl.col("conid").is_in(list(conids)))
            .select("conid", "position", "event_time", "written_at")
            .collect()
        )
    if not frames:
        return pl.DataFrame(
            schema={
                "conid": pl.Int64,
                "position": pl.Float64,
                "event_time": pl.Datetime("us", "UTC"),
                "written_at": pl.Datetime("us", "UTC"),
            }
        )
    return pl.concat(frames).sort(["event_time", "written_at"]).group_by("conid", maintain_order=True).last()


@dg.asset_check(
    asset=position_queue.key, description="The oldest pending queue item waits at most max_queue_age_s."
)
def queue_backlog_age(lake: LakeResource, thresholds: HealthThresholds) -> dg.AssetCheckResult:
    backlog = PositionQueue(lake.root_uri, lake.storage_options).backlog()  # one aggregate, no rows read
    age = age_seconds(backlog.oldest_queued_at)
    return dg.AssetCheckResult(
        passed=age is None or age <= thresholds.max_queue_age_s,
        metadata={
            "pending": backlog.due,
            "oldest_pending_age_s": age,
            "max_queue_age_s": thresholds.max_queue_age_s,
        },
    )


@dg.asset_check(
    asset=positions,
    description="Active registry legs the book does not hold (a strategy leg with no position behind it).",
)
def registry_legs_held(lake: LakeResource) -> dg.AssetCheckResult:
    legs = StrategyRegistry(lake.root_uri, lake.storage_options).active_legs()
    held = set(read_positions(lake.root_uri, lake.storage_options)["conid"].to_list())
    missing = [leg for leg in legs if leg.conid not in held]
    return dg.AssetCheckResult(
        passed=not missing,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "active_legs": len(legs),
            "not_held": len(missing),
            "legs_not_held": ", ".join(_describe(leg) for leg in missing[:20]) or "none",
        },
    )


def _describe(leg: RegistryLeg) -> str:
    strike = "" if leg.strike is None else f"{leg.strike:g}"
    contract = " ".join(p for p in (leg.symbol, leg.expiry, f"{leg.right or ''}{strike}") if p)
    return f"{contract} ({leg.conid}, strat. {leg.strategy_id})"


@dg.asset_check(
    asset="strategy_registry",
    description="Every strategy_registry row keeps the table's contract (bad rows are skipped by readers).",
)
def registry_rows_valid(lake: LakeResource) -> dg.AssetCheckResult:
    registry = StrategyRegistry(lake.root_uri, lake.storage_options)
    try:
        invalid = registry.invalid_rows()
        legs = registry.all_legs().height
    except LakeSchemaError as exc:  # a required column missing or of an incompatible type: nothing is read
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"schema_error": exc.reason, "table_uri": exc.uri},
        )
    return dg.AssetCheckResult(
        passed=not invalid,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "valid_rows": legs,
            "invalid_rows": len(invalid),
            "invalid": dg.MetadataValue.md(
                "\n".join(f"- {row}" for row in invalid[:50]) if invalid else "none"
            ),
        },
    )
