"""One asset per Delta table, so the UI's lineage is DESIGN.md's picture.

`strategy_registry` is written by the strategy engine; `streamed_positions` and `position_queue` are
written by the long-running stream run (`stream.py`), which reports their progress as materializations.
None of the three is materialized on demand, so they are external assets here: no "Materialize" button
that would start a second, unsupervised stream. `queued_positions` (one dynamic partition per queued
contract) and `positions` are materialized by the batch runs.
"""

from datetime import UTC, datetime
from typing import Literal

import dagster as dg

from v6_positions.defs.batch import refresh_contracts
from v6_positions.defs.heartbeat import live_stream_run
from v6_positions.defs.metadata import age_seconds, position_rows_frame, rows_markdown
from v6_positions.defs.partitions import queued_contracts
from v6_positions.defs.resources import IBResource, LakeResource, StreamSupervision, settings_of
from v6_positions.lake.positions import read_positions, refresh_positions
from v6_positions.lake.queue import PositionQueue

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


@dg.asset(
    partitions_def=queued_contracts,
    deps=[position_queue],
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="Batch-refreshed rows of queued contracts (append-only history, source=batch), one dynamic "
    "partition per contract. Uses the payloads the stream queued: zero streaming lines.",
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
    outcome = refresh_contracts(
        settings, keys, fetch=fetch, batch_client_id=ib.batch_client_id, log=context.log
    )
    context.log.info(
        f"{len(keys)} partitions: {outcome.due} due, {len(outcome.written)} rows committed "
        f"({outcome.from_payload} from queued payloads, {outcome.from_fetch} fetched, "
        f"{outcome.closed} closed), "
        f"{len(outcome.failed)} failed"
    )
    backlog = PositionQueue(settings.lake_uri, settings.lake_storage_options or None).pending_count()
    return dg.MaterializeResult(
        metadata={
            "partitions": len(keys),
            "due": outcome.due,
            "rows_written": len(outcome.written),
            "from_queued_payload": outcome.from_payload,
            "from_zero_line_fetch": outcome.from_fetch,
            "closed": outcome.closed,
            "failed": len(outcome.failed),
            "stream_alive": stream is not None,
            "zero_line_fetch_error": outcome.fetch_error or "",
            "queue_backlog": backlog,
            "latest_rows": rows_markdown(position_rows_frame(outcome.written)),
        }
    )


@dg.asset(
    deps=[streamed_positions, queued_positions],
    description="The current book: one row per (account, conid), the newest of stream and batch, with its "
    "source and age. Rebuilt by every batch run.",
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
)
def positions(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    rows = refresh_positions(lake.root_uri, lake.storage_options)
    book = read_positions(lake.root_uri, lake.storage_options)
    by_source = {str(s): int(n) for s, n in book.group_by("source").len().iter_rows()} if rows else {}
    oldest = book["event_time"].min() if rows else None
    context.log.info(f"positions rebuilt: {rows} open positions {by_source}")
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "streamed": by_source.get("stream", 0) + by_source.get("portfolio", 0),
            "batch": by_source.get("batch", 0),
            "oldest_age_s": age_seconds(oldest) if isinstance(oldest, datetime) else None,
            "refreshed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "latest_rows": rows_markdown(book),
        }
    )
