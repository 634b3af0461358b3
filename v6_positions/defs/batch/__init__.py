"""The batch path: pending position_queue rows become `queued_positions` partitions, zero lines.

partition_keys.py    the dynamic partitions: one readable key per queued contract, (account, conid) back
partition_events.py  what a batch run reports per partition (materialized, failed) and the tag deferring it
queue_sensor.py      the queue_partitions sensor: new queue keys become partitions
schedule.py          the batch schedule: pending partitions in as few partition-range runs as possible
refresh.py           one batch: due queue rows -> history rows (payloads, or a zero-line fetch)
cleanup.py           closed or expired contracts lose their partition and queue row
"""
