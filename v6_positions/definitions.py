"""Assembles the Dagster code location; nothing else lives here."""

from __future__ import annotations

import dagster as dg

from v6_positions.config import Settings
from v6_positions.defs import assets, checks, jobs, queue_sensor, schedules, sensors, stream
from v6_positions.defs.resources import HealthThresholds, StreamSupervision, resources_from_settings


def build_definitions(
    settings: Settings,
    supervision: StreamSupervision | None = None,
    thresholds: HealthThresholds | None = None,
) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            assets.strategy_registry,
            assets.streamed_positions,
            assets.position_queue,
            assets.queued_positions,
            assets.positions,
        ],
        asset_checks=[
            checks.lines_within_budget,
            checks.active_legs_fresh,
            checks.rotating_legs_within_bound,
            checks.queue_backlog_age,
            checks.registry_legs_held,
            checks.registry_rows_valid,
        ],
        jobs=[
            stream.build_stream_job(settings.gateway),
            jobs.batch_job,
            jobs.health_check_job,
            jobs.lake_maintenance_job,
        ],
        sensors=[sensors.stream_supervisor, queue_sensor.queue_partitions],
        schedules=[
            schedules.build_batch_schedule(settings.batch_cron),
            schedules.health_check_schedule,
            schedules.lake_maintenance_schedule,
            schedules.queue_cleanup_schedule,
        ],
        resources=resources_from_settings(settings, supervision, thresholds),
    )


defs = build_definitions(Settings.from_env())
