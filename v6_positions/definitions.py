"""Assembles the Dagster code location; nothing else lives here."""

from __future__ import annotations

import dagster as dg

from v6_positions.config import Settings
from v6_positions.defs import assets, checks, jobs, reconciliation, schedules
from v6_positions.defs.batch import queue_sensor
from v6_positions.defs.batch import schedule as batch_schedule
from v6_positions.defs.resources import HealthThresholds, StreamSupervision, resources_from_settings
from v6_positions.defs.risk import assets as risk_assets
from v6_positions.defs.risk import checks as risk_checks
from v6_positions.defs.risk import schedules as risk_schedules
from v6_positions.defs.risk import underlying_closes
from v6_positions.defs.stream import job as stream
from v6_positions.defs.stream import supervisor


def build_definitions(
    settings: Settings,
    supervision: StreamSupervision | None = None,
    thresholds: HealthThresholds | None = None,
    risk_limits: risk_checks.RiskLimits | None = None,
) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            assets.strategy_registry,
            assets.streamed_positions,
            assets.position_queue,
            assets.queued_positions,
            assets.positions,
            underlying_closes.underlying_closes,
            risk_assets.risk_refresh,
            risk_assets.book_eod,
        ],
        asset_checks=[
            checks.lines_within_budget,
            checks.active_legs_fresh,
            checks.rotating_legs_within_bound,
            checks.queue_backlog_age,
            checks.registry_legs_held,
            checks.registry_rows_valid,
            reconciliation.book_matches_ib,
            risk_checks.strategy_legs_held_and_fresh,
            risk_checks.risk_coverage,
            risk_checks.strategy_risk_limits,
        ],
        jobs=[
            stream.build_stream_job(settings.gateway),
            jobs.batch_job,
            jobs.health_check_job,
            jobs.lake_maintenance_job,
            reconciliation.reconcile_job,
            risk_schedules.risk_job,
            risk_schedules.eod_job,
        ],
        sensors=[supervisor.stream_supervisor, queue_sensor.queue_partitions],
        schedules=[
            batch_schedule.build_batch_schedule(settings.batch_cron),
            schedules.health_check_schedule,
            schedules.lake_maintenance_schedule,
            schedules.queue_cleanup_schedule,
            reconciliation.build_reconcile_schedule(settings.reconcile_cron),
            risk_schedules.risk_refresh_every_minute,
            risk_schedules.book_eod_at_close,
        ],
        resources={
            **resources_from_settings(settings, supervision, thresholds),
            "risk_limits": risk_limits or risk_checks.RiskLimits(),
        },
    )


defs = build_definitions(Settings.from_env())
