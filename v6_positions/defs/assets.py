"""One asset per Delta table, so the UI's lineage is DESIGN.md's picture.

`strategy_registry` is written by the strategy engine; `streamed_positions` and `position_queue` are
written by the long-running stream run (`stream/job.py`), which reports their progress as materializations.
None of the three is materialized on demand, so they are external assets here: no "Materialize" button
that would start a second, unsupervised stream. `queued_positions` (one dynamic partition per queued
contract) and `positions` are materialized by the batch runs.
"""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

import dagster as dg
import polars as pl

from v6_positions.defs.batch.partition_events import events_deferred, report_failed, report_materialized
from v6_positions.defs.batch.partition_keys import queued_contracts
from v6_positions.defs.batch.refresh import refresh_contracts
from v6_positions.defs.metadata import age_seconds, rows_markdown
from v6_positions.defs.resources import IBResource, LakeResource, StreamSupervision, settings_of
from v6_positions.defs.stream.heartbeat import live_stream_run
from v6_positions.ib.account.position_list import AccountNotManaged
from v6_positions.lake.history import PositionRow
from v6_positions.lake.positions import read_positions

GROUP = "positions"
OWNERS = ["team:trading"]
KINDS = {"deltalake", "polars"}

strategy_registry = dg.AssetSpec(
    "strategy_registry",
    description="Active strategy legs (one row per conid), written by the strategy engine. The supervisor "
    "sensor observes its version and active-leg count.",
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
)

streamed_positions = dg.AssetSpec(
    "streamed_positions",
    deps=[strategy_registry],
    description="History of streamed updates of active legs (append-only, one commit per flush), written by "
    "the long-running stream run, which reports lines in use / budget and rows flushed every few seconds.",
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
)

position_queue = dg.AssetSpec(
    "position_queue",
    description="Contracts waiting for a batch refresh (one row per account+conid, latest payload), written "
    "by the stream run for every position it does not stream.",
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
)


class BatchConfig(dg.Config):
    # "auto": fetch with zero-line requests only when no stream run is alive or a payload is missing.
    zero_line_fetch: Literal["auto", "always", "never"] = "auto"


# Run tags carrying this run's batch figures from `queued_positions` to `positions` (and to the run list).
SUMMARY_TAG_PREFIX = "v6/batch-"
_SUMMARY_FIELDS = ("partitions", "due", "rows_written", "from_queued_payload", "from_zero_line_fetch",
                   "closed", "failed", "not_due")  # fmt: skip


@dg.asset(
    partitions_def=queued_contracts,
    deps=[position_queue],
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="Batch-refreshed rows of queued contracts (append-only history, source=batch), one dynamic "
    "partition per contract. Uses the payloads the stream queued: zero streaming lines. A partition is "
    "reported materialized only when its row was committed in that run; contracts that could not be "
    "refreshed are reported failed (and fail the run); done contracts a range merely spans are not reported "
    "again.",
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
)
def queued_positions(
    context: dg.AssetExecutionContext,
    config: BatchConfig,
    lake: LakeResource,
    ib: IBResource,
    supervision: StreamSupervision,
) -> dg.MaterializeResult:
    keys = context.partition_keys  # one key, or a whole range (context.partition_key raises for a range)
    stream = live_stream_run(context.instance, ib.gateway, stale_after_s=supervision.stale_after_s)
    fetch = config.zero_line_fetch == "always" or (config.zero_line_fetch == "auto" and stream is None)
    settings = settings_of(lake, ib)
    try:
        outcome = refresh_contracts(
            settings, keys, fetch=fetch, batch_client_id=ib.batch_client_id, log=context.log
        )
    except AccountNotManaged as exc:  # nothing written, nothing marked: the rows wait for a fixed setting
        raise dg.Failure(description=f"batch stopped, nothing written: {exc}") from exc
    summary = {
        "partitions": len(keys),
        "due": outcome.due,
        "rows_written": len(outcome.written),
        "from_queued_payload": outcome.from_payload,
        "from_zero_line_fetch": outcome.from_fetch,
        "closed": outcome.closed,
        "failed": len(outcome.failed),
        "not_due": len(keys) - outcome.due,
    }
    context.log.info(
        f"{len(keys)} partitions: {outcome.due} due, {len(outcome.written)} rows committed "
        f"({outcome.from_payload} from queued payloads, {outcome.from_fetch} fetched, "
        f"{outcome.closed} closed), "
        f"{len(outcome.failed)} failed, {len(keys) - outcome.due} not due (not reported again)"
        + (f"; zero-line fetch error: {outcome.fetch_error}" if outcome.fetch_error else "")
    )
    context.instance.add_run_tags(
        context.run.run_id, {f"{SUMMARY_TAG_PREFIX}{name}": str(value) for name, value in summary.items()}
    )
    now = datetime.now(UTC)
    per_partition = {
        key: partition_metadata(row, outcome.origins.get((row.account, row.conid), row.source), now)
        for key, row in outcome.committed_keys.items()
    }
    if events_deferred(context):
        report_materialized(context, per_partition)
        if outcome.failed_keys:
            report_failed(context, outcome.failed_keys)
    elif not outcome.failed_keys:
        # Dagster reports every key of the run: honest only when every key was committed (one-key runs).
        for key, metadata in per_partition.items():
            context.add_asset_metadata(metadata, partition_key=key)
    if outcome.failed_keys:
        shown = ", ".join(sorted(outcome.failed_keys)[:5])
        raise dg.Failure(
            description=f"{len(outcome.failed_keys)} of {outcome.due} due contracts were not refreshed "
            f"(they stay queued and are retried): {shown}",
            metadata={**summary, "error": outcome.fetch_error or next(iter(outcome.failed_keys.values()))},
        )
    return dg.MaterializeResult()


@dg.asset(
    deps=[streamed_positions, queued_positions],
    description="The current book: one row per (account, conid), the newest of stream and batch, with its "
    "source and age. Kept current by the writers (the stream's flushes and the batch's commits merge into "
    "it); each batch run records its summary here.",
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
)
def positions(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    book = read_positions(lake.root_uri, lake.storage_options)
    run = context.instance.get_run_by_id(context.run.run_id)
    run_tags = run.tags if run is not None else {}
    metadata = {**book_metadata(book), **batch_summary(run_tags)}
    context.log.info(f"positions: {book.height} open positions")
    if events_deferred(context):
        context.log_event(dg.AssetMaterialization(asset_key=context.asset_key, metadata=metadata))
        return dg.MaterializeResult()
    return dg.MaterializeResult(metadata=metadata)


def partition_metadata(row: PositionRow, origin: str, now: datetime) -> dict[str, object]:
    """What one contract got in this run (its source, price and age): small, so the event log grows with
    contracts refreshed, not with tables copied into metadata."""
    return {"source": origin, "market_price": row.market_price, "age_s": age_seconds(row.event_time, now)}


def book_metadata(book: pl.DataFrame) -> dict[str, object]:
    by_source = {str(s): int(n) for s, n in book.group_by("source").len().iter_rows()} if book.height else {}
    oldest = book["event_time"].min() if book.height else None
    return {
        "rows": book.height,
        "streamed": by_source.get("stream", 0) + by_source.get("portfolio", 0),
        "batch": by_source.get("batch", 0),
        "oldest_age_s": age_seconds(oldest) if isinstance(oldest, datetime) else None,
        "refreshed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "latest_rows": rows_markdown(book),
    }


def batch_summary(run_tags: Mapping[str, str]) -> dict[str, int]:
    """This run's batch figures, as `queued_positions` left them in the run's tags."""
    summary = {}
    for name in _SUMMARY_FIELDS:
        value = run_tags.get(f"{SUMMARY_TAG_PREFIX}{name}")
        if value is not None and value.isdigit():
            summary[f"batch_{name}"] = int(value)
    return summary
