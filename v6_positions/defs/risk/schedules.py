"""When risk is computed: the refresh every minute, the day's close at 16:20 New York on weekdays.

A refresh tick is skipped while the previous refresh run is still going, so runs never pile up.
"""

import dagster as dg

from v6_positions.defs.risk.assets import book_eod, risk_refresh
from v6_positions.defs.risk.underlying_closes import underlying_closes
from v6_positions.risk.eod import NEW_YORK

RISK_JOB_NAME = "risk_refresh_job"
EOD_JOB_NAME = "book_eod_job"

# The refresh's checks (legs held and fresh, coverage, limits) ride along: selected assets bring their checks.
risk_job = dg.define_asset_job(
    RISK_JOB_NAME,
    # underlying_closes first: the model greeks of queued options price from its closes
    selection=dg.AssetSelection.assets(underlying_closes, risk_refresh),
    executor_def=dg.in_process_executor,
    description="strategy_risk and underlying_risk from the current book, and their checks.",
)
eod_job = dg.define_asset_job(
    EOD_JOB_NAME,
    selection=dg.AssetSelection.assets(book_eod),
    executor_def=dg.in_process_executor,
    description="The book and its risk at a day's close (one daily partition).",
)

_BUSY = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


@dg.schedule(
    cron_schedule="* * * * *",
    job=risk_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every minute: strategy_risk and underlying_risk (snapshot + history) and their checks.",
)
def risk_refresh_every_minute(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    busy = context.instance.get_run_records(
        dg.RunsFilter(job_name=RISK_JOB_NAME, statuses=list(_BUSY)), limit=1
    )
    if busy:
        return dg.SkipReason(f"risk refresh run {busy[0].dagster_run.run_id} is still in progress")
    return dg.RunRequest(run_key=f"risk:{context.scheduled_execution_time.isoformat()}")


@dg.schedule(
    cron_schedule="20 16 * * 1-5",
    execution_timezone=NEW_YORK.key,
    job=eod_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Weekdays 16:20 New York: today's book_eod partition (the book and its risk at the close).",
)
def book_eod_at_close(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = context.scheduled_execution_time.astimezone(NEW_YORK).date().isoformat()
    return dg.RunRequest(run_key=f"eod:{day}", partition_key=day)
