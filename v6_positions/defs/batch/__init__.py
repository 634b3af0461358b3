"""The batch path: pending position_queue rows become `queued_positions` partitions, zero lines.

partitions.py    the dynamic partitions (keys per contract) and their per-partition events
queue_sensor.py  the queue_partitions sensor: new queue keys become partitions
schedule.py      the batch schedule: pending partitions in as few partition-range runs as possible
refresh.py       one batch: due queue rows -> history rows (payloads, or a zero-line fetch)
cleanup.py       closed or expired contracts lose their partition and queue row
"""
