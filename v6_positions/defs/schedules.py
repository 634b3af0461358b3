"""Schedules of the cross-cutting jobs: health checks, lake maintenance, queue clean-up (the batch schedule is
`batch/schedule.py`, risk's `risk/schedules.py`, reconciliation's `reconciliation.py`)."""

from typing import Any

import dagster as dg

from v6_positions.defs.jobs import health_check_job, lake_maintenance_job, queue_cleanup_job


# `job`: an op job or an asset job; define_asset_job's return type is not public, hence Any.
def _running(name: str, cron: str, job: Any, description: str) -> dg.ScheduleDefinition:
    """A schedule that runs from the moment the code location loads (nobody has to switch it on)."""
    return dg.ScheduleDefinition(
        name=name,
        cron_schedule=cron,
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )


health_check_schedule = _running(
    "position_health_checks_every_5_min",
    "*/5 * * * *",
    health_check_job,
    "Line budget, stream freshness, queue backlog age, registry legs without a position.",
)
lake_maintenance_schedule = _running(
    "lake_maintenance_daily",
    "17 3 * * *",
    lake_maintenance_job,
    "Compact, checkpoint and vacuum every Delta table once a day.",
)
queue_cleanup_schedule = _running(
    "queued_positions_cleanup",
    "7 * * * *",
    queue_cleanup_job,
    "Hourly: remove the partitions and queue rows of contracts that are closed or past expiry, "
    "so partitions, queue and schedule ticks stay the size of the book.",
)
