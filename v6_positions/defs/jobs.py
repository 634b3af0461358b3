"""Jobs: the batch refresh (partitioned assets), the health checks and lake maintenance.

The stream job lives with its op in `stream.py`.
"""

import dagster as dg

from v6_positions.defs.assets import positions, queued_positions
from v6_positions.defs.partitions import queued_contracts
from v6_positions.defs.resources import LakeResource
from v6_positions.lake.maintenance import maintain

BATCH_JOB_NAME = "queued_positions_batch_job"

# `positions` rides along in every batch run, so the book is rebuilt by the run that refreshed the rows and
# lineage still reads queued_positions -> positions. In-process: two steps in sequence, no process per step.
batch_job = dg.define_asset_job(
    BATCH_JOB_NAME,
    selection=dg.AssetSelection.assets(queued_positions, positions),
    partitions_def=queued_contracts,
    executor_def=dg.in_process_executor,
    description="Refresh pending queued contracts (a range of partitions per run) and rebuild the book.",
)

health_check_job = dg.define_asset_job(
    "position_health_checks",
    selection=dg.AssetSelection.all_asset_checks(),
    executor_def=dg.in_process_executor,
    description="Line budget, stream freshness, queue backlog and registry legs without a position.",
)


class MaintenanceConfig(dg.Config):
    retention_hours: int = 168


@dg.op(description="Compact, checkpoint and vacuum every Delta table of the lake.")
def maintain_lake(context: dg.OpExecutionContext, config: MaintenanceConfig, lake: LakeResource) -> None:
    stats = maintain(lake.root_uri, lake.storage_options, retention_hours=config.retention_hours)
    for table, table_stats in stats.items():
        context.log.info(f"{table}: {table_stats}")


@dg.job(executor_def=dg.in_process_executor, description="Small-file hygiene of the Delta tables.")
def lake_maintenance_job() -> None:
    maintain_lake()
