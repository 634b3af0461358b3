"""The batch schedule: every pending queued contract materialized in as few partition-range runs as possible.

Schedules cannot add dynamic partitions (only sensors can), so the batch schedule requests only keys the
supervisor sensor has already added; a pending contract without a partition waits one sensor tick.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from v6_positions.defs.batch.partition_events import DEFER_EVENTS_TAG
from v6_positions.defs.batch.partition_keys import contract_from_key, queued_contracts
from v6_positions.defs.jobs import BATCH_JOB_NAME, batch_job
from v6_positions.defs.resources import LakeResource
from v6_positions.lake.queue import PositionQueue

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

# A range covers every key between its ends, done ones included (the asset skips those cheaply). Bridging a
# gap of up to MAX_GAP done keys is cheaper than another run; MAX_RUN_PARTITIONS bounds one run's work.
MAX_GAP = 100
MAX_RUN_PARTITIONS = 5_000

_BUSY = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


@dataclass(frozen=True, slots=True)
class KeyRange:
    start: str
    end: str
    size: int  # keys covered, due or not
    due: int


def plan_ranges(
    partition_keys: Sequence[str],
    due: set[tuple[str, int]],
    *,
    max_gap: int = MAX_GAP,
    max_size: int = MAX_RUN_PARTITIONS,
) -> list[KeyRange]:
    """Contiguous ranges (partition insertion order) covering every due contract; as few as possible."""
    ranges: list[KeyRange] = []
    first = last = -1
    due_in_range = 0
    for index, key in enumerate(partition_keys):
        if contract_from_key(key) not in due:
            continue
        if first >= 0 and (index - last - 1 > max_gap or index - first + 1 > max_size):
            ranges.append(
                KeyRange(partition_keys[first], partition_keys[last], last - first + 1, due_in_range)
            )
            first = -1
        if first < 0:
            first, due_in_range = index, 0
        last = index
        due_in_range += 1
    if first >= 0:
        ranges.append(KeyRange(partition_keys[first], partition_keys[last], last - first + 1, due_in_range))
    return ranges


def batch_run_requests(
    context: dg.ScheduleEvaluationContext, lake: LakeResource
) -> list[dg.RunRequest] | dg.SkipReason:
    busy = context.instance.get_run_records(
        dg.RunsFilter(job_name=BATCH_JOB_NAME, statuses=list(_BUSY)), limit=1
    )
    if busy:
        return dg.SkipReason(f"batch run {busy[0].dagster_run.run_id} is still in progress")
    queue = PositionQueue(lake.root_uri, lake.storage_options)
    due = queue.due_keys()  # only the keys of due rows are read from the queue
    if not due:
        return dg.SkipReason("no pending queued contracts")
    # Ranges follow the partitions' insertion order, which only the listing gives; the listing is bounded by
    # the clean-up (closed and expired contracts lose their partition), not by the day's history.
    keys = context.instance.get_dynamic_partitions(queued_contracts.name)
    ranges = plan_ranges(keys, due)
    covered = sum(r.due for r in ranges)
    if not ranges:
        return dg.SkipReason(
            f"{len(due)} pending contracts have no partition yet (the queue_partitions sensor adds them)"
        )
    # The tick's time in the key: a tick the daemon re-evaluates after a crash does not launch twice.
    tick = context.scheduled_execution_time.isoformat()
    context.log.info(f"{covered} of {len(due)} pending contracts in {len(ranges)} run(s)")
    return [
        dg.RunRequest(
            run_key=f"batch:{tick}:{r.start}..{r.end}",
            tags={
                RANGE_START_TAG: r.start,
                RANGE_END_TAG: r.end,
                "v6/due": str(r.due),
                DEFER_EVENTS_TAG: "true",
            },
        )
        for r in ranges
    ]


def build_batch_schedule(cron_schedule: str = "* * * * *") -> dg.ScheduleDefinition:
    @dg.schedule(
        name="queued_positions_batch",
        cron_schedule=cron_schedule,
        job=batch_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Materialize every pending queued_positions partition in as few runs as possible "
        "(partition-range runs); each committed contract is reported on its partition, the run's summary on "
        "positions.",
    )
    def queued_positions_batch(
        context: dg.ScheduleEvaluationContext, lake: LakeResource
    ) -> list[dg.RunRequest] | dg.SkipReason:
        return batch_run_requests(context, lake)

    return queued_positions_batch
