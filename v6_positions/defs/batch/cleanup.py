"""Bounded growth of the batch side: closed or expired contracts lose their partition and their queue row.

Queue rows go first, each only if it is still exactly as read (a contract reopened between the read and the
delete keeps its row); then the partitions of the rows really gone. A contract re-queued after that check
gets its partition back here (the queue sensor only adds partitions for never-processed rows), and one
re-queued later still is a new row the sensor sees. A partition without a queue row is removed too (left
behind by a run that died in between). Dagster deletes partitions one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import dagster as dg

from v6_positions.defs.batch.partition_keys import contract_from_key, queued_contracts
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
    gone = queue.closed_or_expired_items(today)
    outcome = CleanupOutcome(contracts=len(gone))
    outcome.queue_rows = queue.remove(gone) if gone else 0
    queued = set(queue.keys())  # after the delete: rows re-queued meanwhile are still here
    deleted: list[str] = []
    for key in instance.get_dynamic_partitions(queued_contracts.name):
        try:
            contract = contract_from_key(key)
        except ValueError:
            continue  # not a key this project made: not ours to delete
        if contract not in queued:
            instance.delete_dynamic_partition(queued_contracts.name, key)
            deleted.append(key)
    outcome.partitions = len(deleted)
    gone_keys = {item.key for item in gone}
    outcome.orphans = sum(1 for key in deleted if contract_from_key(key) not in gone_keys)
    # A contract reopened between the listing above and the deletes needs its partition back.
    requeued = set(queue.keys())
    restore = [key for key in deleted if contract_from_key(key) in requeued]
    if restore:
        instance.add_dynamic_partitions(queued_contracts.name, restore)
    return outcome
