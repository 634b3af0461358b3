"""Reconciliation in Dagster: the `book_matches_ib` check on `positions`, its job and its schedule.

Each evaluation heals the book from history, reads IB's complete position list on a helper clientId (zero
market-data lines, no account updates), compares, repairs what differs (closes for positions no longer
held, top-priority re-queues for missing or wrongly sized ones) and reports what it found: the check fails
while the book differs, so the UI says "book matches IB: 2,184/2,184" or names the first differences. An
answer that cannot prove anything (gateway down, V6_IB_ACCOUNT not managed) changes nothing and says so.
"""


import dagster as dg
import polars as pl

from v6_positions.defs.assets import positions
from v6_positions.defs.metadata import rows_markdown
from v6_positions.defs.resources import IBResource, LakeResource, settings_of
from v6_positions.ib.account.position_list import broker_positions
from v6_positions.ib.zero_line.position_fetch import fetch_position_list
from v6_positions.lake.reconcile import ReconcileOutcome, reconcile_book

RECONCILE_JOB_NAME = "book_reconciliation"
_SHOWN_DIFFERENCES = 10


@dg.asset_check(
    asset=positions,
    name="book_matches_ib",
    description="positions equals IB's own position list (reqPositions, zero lines): every position, its "
    "size, nothing closed shown open. Each evaluation also repairs what it finds.",
)
def book_matches_ib(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, ib: IBResource
) -> dg.AssetCheckResult:
    settings = settings_of(lake, ib)
    try:
        answer = fetch_position_list(settings, ib.reconcile_client_id)
    except Exception as exc:  # gateway down, account not managed: nothing can be proven, nothing changes
        context.log.warning(f"not reconciled: {type(exc).__name__}: {exc}")
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"not reconciled: IB's position list could not be read ({exc})",
            metadata={"reconciled": False, "error": f"{type(exc).__name__}: {exc}"},
        )
    outcome = reconcile_book(lake.root_uri, broker_positions(answer), lake.storage_options)
    context.log.info(outcome.summary())
    only_unverified = not outcome.differences and outcome.unverified_book_rows > 0
    return dg.AssetCheckResult(
        passed=outcome.matches,
        # Rows IB's answer could neither confirm nor disprove (an account it listed nothing for) warn.
        severity=dg.AssetCheckSeverity.WARN if only_unverified else dg.AssetCheckSeverity.ERROR,
        description=outcome.summary(),
        metadata=reconcile_metadata(outcome),
    )


def reconcile_metadata(outcome: ReconcileOutcome) -> dict[str, object]:
    healed = outcome.healed
    return {
        "reconciled": True,
        "book_matches_ib": f"{outcome.matching:,}/{outcome.broker_positions:,}",
        "ib_positions": outcome.broker_positions,
        "book_rows": outcome.book_rows,
        "matching": outcome.matching,
        "missing": outcome.count("missing"),
        "wrong_size": outcome.count("wrong_size"),
        "closed_but_open_in_book": outcome.count("ghost"),
        "requeued": outcome.requeued,
        "closes_written": outcome.closes_written,
        "book_rows_healed_from_history": 0 if healed is None else healed.book_rows_changed,
        "not_compared_newer_than_answer": outcome.too_new,
        "accounts_without_positions_listed": ", ".join(outcome.unverified_accounts) or "none",
        "book_rows_not_verified": outcome.unverified_book_rows,
        "ib_answer_at": outcome.answered_at.isoformat(timespec="seconds"),
        "first_differences": differences_markdown(outcome),
    }


def differences_markdown(outcome: ReconcileOutcome) -> dg.MarkdownMetadataValue:
    if not outcome.differences:
        return dg.MetadataValue.md("_none_")
    frame = pl.DataFrame(
        [
            {"kind": d.kind, "account": d.account, "conid": d.conid, "symbol": d.symbol,
             "book": d.book_position, "ib": d.broker_position}
            for d in outcome.differences
        ]
    )  # fmt: skip
    return rows_markdown(frame, limit=_SHOWN_DIFFERENCES, columns=tuple(frame.columns))


reconcile_job = dg.define_asset_job(
    RECONCILE_JOB_NAME,
    selection=dg.AssetSelection.checks(book_matches_ib),
    executor_def=dg.in_process_executor,
    description="Reconcile positions against IB's position list (zero lines) and repair what differs.",
)


def build_reconcile_schedule(cron_schedule: str = "*/5 * * * *") -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="book_reconciliation_schedule",
        cron_schedule=cron_schedule,
        job=reconcile_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Reconcile the book against IB (V6_RECONCILE_CRON; the stream also reconciles at every "
        "connect).",
    )
