"""The dynamic partitions of `queued_positions`: one per queued contract.

The supervisor sensor adds keys, the batch schedule requests ranges of them and the asset reads them back, so
all three import this one definition and the key helpers next to it.

Key format: `<account>-<symbol>-<expiry>-<right>-<strike>-<conid>` for options (`contracts.is_option`, e.g.
`DU1000001-SPY-20261218-C-600-123456`), `<account>-<symbol>-<sec_type>-<conid>` for anything else. The account
is the first dash-separated token and the conid the last, so both can be recovered from the key; the other
tokens are for the reader of the UI.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping

import dagster as dg
from dagster._core.definitions.metadata import RawMetadataValue
from dagster._core.events import (
    AssetMaterializationPlannedData,
    DagsterEvent,
    DagsterEventBatchMetadata,
    DagsterEventType,
    StepMaterializationData,
    generate_event_batch_id,
)
from dagster._core.storage.tags import EXTERNALLY_MANAGED_ASSETS_TAG
from dagster._utils.tags import get_boolean_tag_value

from v6_positions.contracts import is_option

queued_contracts = dg.DynamicPartitionsDefinition(name="queued_contracts")

# Dashes separate the tokens; anything a symbol could carry that would blur them is replaced.
_UNSAFE = re.compile(r"[^A-Za-z0-9._]+")
_NO_ACCOUNT = "ANY"


def _token(value: object) -> str:
    text = _UNSAFE.sub("_", str(value).strip())
    return text.strip("_") or "NA"


def _strike_token(strike: float | None) -> str:
    if strike is None:
        return "NA"
    return f"{strike:g}" if float(strike) != int(strike) else str(int(strike))


def contract_partition_key(
    account: str,
    conid: int,
    symbol: str,
    sec_type: str | None = "OPT",
    right: str | None = None,
    strike: float | None = None,
    expiry: str | None = None,
) -> str:
    """The readable, stable partition key of one queued contract."""
    head = _token(account) if account else _NO_ACCOUNT
    if is_option(sec_type):
        middle = [_token(symbol), _token(expiry or "NA"), _token(right or "NA"), _strike_token(strike)]
    else:
        middle = [_token(symbol), _token(sec_type)]
    return "-".join([head, *middle, str(int(conid))])


def contract_from_key(key: str) -> tuple[str, int]:
    """`(account, conid)` of a partition key; raises ValueError for a key this module did not make."""
    head, _, tail = key.partition("-")
    conid_text = key.rsplit("-", 1)[-1]
    if not tail or not conid_text.isdigit():
        raise ValueError(f"not a queued-contract partition key: {key!r}")
    return ("" if head == _NO_ACCOUNT else head), int(conid_text)


# -- what a batch run reports per partition --------------------------------------------------------------
# Batch runs carry DEFER_EVENTS_TAG, so Dagster writes neither a planned event per partition of the range at
# run creation nor a materialization per partition at output: a range also spans contracts that fail and done
# keys bridged to keep it contiguous, and reporting those would be a lie (and costs two events per key). The
# asset reports what really happened instead, with the functions below.
DEFER_EVENTS_TAG = EXTERNALLY_MANAGED_ASSETS_TAG  # "dagster/defer_asset_events"


def events_deferred(context: dg.AssetExecutionContext) -> bool:
    """Whether this run leaves asset events to the asset (batch runs do; a UI materialization may not)."""
    return get_boolean_tag_value(context.run.tags.get(DEFER_EVENTS_TAG), default_value=False)


def report_materialized(
    context: dg.AssetExecutionContext, metadata_by_key: Mapping[str, Mapping[str, RawMetadataValue]]
) -> None:
    """One materialization per committed partition, stored as one batch where the storage supports it
    (dagster-postgres with DAGSTER_EVENT_BATCH_SIZE > 0; SQLite stores them one by one).

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
        event = DagsterEvent(
            event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
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
        planned = DagsterEvent.build_asset_materialization_planned_event(
            context.run.job_name, step_key, AssetMaterializationPlannedData(context.asset_key, partition=key)
        )
        context.instance.report_dagster_event(planned, run_id=context.run.run_id)
