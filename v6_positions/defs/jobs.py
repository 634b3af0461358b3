"""Jobs: the batch refresh (partitioned assets), the health checks and lake maintenance.

The stream job lives with its op in `stream/job.py`.
"""

from datetime import UTC, datetime

import dagster as dg

from v6_positions.defs.assets import positions, queued_positions
from v6_positions.defs.batch.cleanup import cleanup_queue
from v6_positions.defs.batch.partition_events import DEFER_EVENTS_TAG
from v6_positions.defs.batch.partition_keys import queued_contracts
from v6_positions.defs.reconciliation import book_matches_ib
from v6_positions.defs.resources import LakeResource
from v6_positions.defs.risk.assets import risk_refresh
from v6_positions.lake.maintenance import maintain

BATCH_JOB_NAME = "queued_positions_batch_job"

# `positions` rides along in every batch run, so the book is rebuilt by the run that refreshed the rows and
# lineage still reads queued_positions -> positions. In-process: two steps in sequence, no process per step.
batch_job = dg.define_asset_job(
    BATCH_JOB_NAME,
    # Reconciliation talks to IB and repairs: it runs on its own schedule, not with every batch.
    selection=dg.AssetSelection.assets(queued_positions, positions)
    - dg.AssetSelection.checks(book_matches_ib),
    partitions_def=queued_contracts,
    executor_def=dg.in_process_executor,
    # The assets report per partition what was committed or failed; Dagster's own per-key events would
    # also report failed and bridged keys of the range (see partition_events.DEFER_EVENTS_TAG).
    tags={DEFER_EVENTS_TAG: "true"},
    description="Refresh pending queued contracts (a range of partitions per run); summary on positions.",
)

health_check_job = dg.define_asset_job(
    "position_health_checks",
    # Reconciliation talks to IB and repairs: it runs in its own job on its own schedule. The risk checks
    # run with every risk refresh (`risk/schedules.py`'s risk_job), on the snapshot that refresh just wrote.
    selection=dg.AssetSelection.all_asset_checks()
    - dg.AssetSelection.checks(book_matches_ib)
    - dg.AssetSelection.checks_for_assets(risk_refresh),
    executor_def=dg.in_process_executor,
    description="Line budget, stream freshness, queue backlog and registry legs without a position.",
)


class MaintenanceConfig(dg.Config):
    retention_hours: int = 168


@dg.op(description="Compact, checkpoint and vacuum every Delta table of the lake.")
def maintain_lake(context: dg.OpExecutionContext, config: MaintenanceConfig, lake: LakeResource) -> None:
    stats = maintain(
        lake.root_uri,
        lake.storage_options,
        retention_hours=config.retention_hours,
        history_retention_days=lake.settings.history_retention_days,
    )
    for table, table_stats in stats.items():
        context.log.info(f"{table}: {table_stats}")


@dg.job(executor_def=dg.in_process_executor, description="Small-file hygiene of the Delta tables.")
def lake_maintenance_job() -> None:
    maintain_lake()


class QueueCleanupConfig(dg.Config):
    # Contracts expiring before this day (YYYYMMDD) count as expired; empty = today (UTC).
    today: str = ""


@dg.op(
    description="Delete the queued_positions partitions and position_queue rows of contracts that are closed "
    "(done with position 0) or past expiry, and partitions left without a queue row."
)
def remove_closed_and_expired(
    context: dg.OpExecutionContext, config: QueueCleanupConfig, lake: LakeResource
) -> dg.Output[None]:
    today = datetime.strptime(config.today, "%Y%m%d").date() if config.today else datetime.now(UTC).date()
    outcome = cleanup_queue(context.instance, lake, today)
    context.log.info(
        f"removed {outcome.partitions} partitions and {outcome.queue_rows} queue rows "
        f"({outcome.contracts} closed or expired contracts, {outcome.orphans} partitions without a queue row)"
    )
    return dg.Output(None, metadata=outcome.metadata())


@dg.job(
    executor_def=dg.in_process_executor,
    description="Bounded growth: partitions and queue rows of closed or expired contracts are removed.",
)
def queue_cleanup_job() -> None:
    remove_closed_and_expired()
