"""What a batch run reports per partition of `queued_positions`: materialized or failed, nothing else.

Batch runs carry DEFER_EVENTS_TAG, so Dagster writes neither a planned event per partition of the range at
run creation nor a materialization per partition at output: a range also spans contracts that fail and done
keys bridged to keep it contiguous, and reporting those would be a lie (and costs two events per key). The
asset reports what really happened instead, with the functions below. The events are built by hand from
Dagster's private event types (v6_positions.dagster_internals says why no public API serves).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

import dagster as dg

from v6_positions.dagster_internals import (
    EXTERNALLY_MANAGED_ASSETS_TAG,
    AssetMaterializationPlannedData,
    DagsterEventBatchMetadata,
    RawMetadataValue,
    StepMaterializationData,
    generate_event_batch_id,
    get_boolean_tag_value,
)

DEFER_EVENTS_TAG = EXTERNALLY_MANAGED_ASSETS_TAG  # "dagster/defer_asset_events"


def events_deferred(context: dg.AssetExecutionContext) -> bool:
    """Whether this run leaves asset events to the asset (batch runs do; a UI materialization may not)."""
    return get_boolean_tag_value(context.run.tags.get(DEFER_EVENTS_TAG), default_value=False)


def report_materialized(
    context: dg.AssetExecutionContext, metadata_by_key: Mapping[str, Mapping[str, RawMetadataValue]]
) -> None:
    """One materialization per committed partition, stored as one batch where the storage supports it
    (dagster-postgres and instance/sqlite_event_log.py, with DAGSTER_EVENT_BATCH_SIZE > 0).

    Stored directly, not through the run's Python loggers: the same event, without 10,000 console lines in
    the run's captured logs and the formatting they cost."""
    step = context.op_execution_context.get_step_execution_context()
    run_id = context.run.run_id
    batch_id = generate_event_batch_id()
    last = len(metadata_by_key) - 1
    for index, (key, metadata) in enumerate(metadata_by_key.items()):
        materialization = dg.AssetMaterialization(
            asset_key=context.asset_key, partition=key, metadata=dict(metadata)
        )
        event = dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.ASSET_MATERIALIZATION.value,
            job_name=step.job_name,
            step_handle=step.step.handle,
            node_handle=step.step.node_handle,
            step_kind_value=step.step.kind.value,
            logging_tags=step.event_tags,
            event_specific_data=StepMaterializationData(materialization),
            message=f"Materialized partition {key}",
            pid=os.getpid(),
        )
        context.instance.report_dagster_event(
            event, run_id, logging.DEBUG, batch_metadata=DagsterEventBatchMetadata(batch_id, index == last)
        )


def report_failed(context: dg.AssetExecutionContext, partition_keys: Iterable[str]) -> None:
    """Mark partitions as attempted in this run; the run then fails, and Dagster shows exactly these as failed
    (a partition planned by a failed run and not materialized in it is a failed partition)."""
    step_key = context.op_execution_context.get_step_execution_context().step.key
    for key in partition_keys:
        planned = dg.DagsterEvent.build_asset_materialization_planned_event(
            context.run.job_name, step_key, AssetMaterializationPlannedData(context.asset_key, partition=key)
        )
        context.instance.report_dagster_event(planned, run_id=context.run.run_id)
