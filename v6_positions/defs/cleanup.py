"""Bounded growth of the batch side: closed or expired contracts lose their partition and their queue row.

Partitions go first, then queue rows: if the run dies in between, the rows are still there and the next
clean-up finds them again (a partition without a queue row is removed too, so nothing is left behind
either way). The queue rows are removed in one commit; Dagster deletes partitions one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import dagster as dg

from v6_positions.defs.partitions import contract_from_key, queued_contracts
from v6_positions.defs.resources import LakeResource
from v6_positions.lake.queue import PositionQueue


@dataclass(slots=True)
class CleanupOutcome:
    contracts: int = 0  # closed or expired contracts found in the queue
    partitions: int = 0  # partitions deleted (theirs, plus orphans)
    orphans: int = 0  # partitions whose contract had no queue row
    queue_rows: int = 0  # queue rows deleted

    def metadata(self) -> dict[str, int]:
        return {
            "closed_or_expired_contracts": self.contracts,
            "partitions_removed": self.partitions,
            "orphan_partitions_removed": self.orphans,
            "queue_rows_removed": self.queue_rows,
        }


def cleanup_queue(instance: dg.DagsterInstance, lake: LakeResource, today: date) -> CleanupOutcome:
    queue = PositionQueue(lake.root_uri, lake.storage_options)
    gone = set(queue.closed_or_expired(today))
    queued = set(queue.keys())
    outcome = CleanupOutcome(contracts=len(gone))
    for key in instance.get_dynamic_partitions(queued_contracts.name):
        try:
            contract = contract_from_key(key)
        except ValueError:
            continue  # not a key this project made: not ours to delete
        if contract in gone or contract not in queued:
            instance.delete_dynamic_partition(queued_contracts.name, key)
            outcome.partitions += 1
            outcome.orphans += contract not in queued
    outcome.queue_rows = queue.remove(sorted(gone)) if gone else 0
    return outcome
