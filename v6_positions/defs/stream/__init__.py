"""The stream run: one long-lived Dagster run holding the IB stream.

job.py         the stream job and op: runs the streamer, stops when the instance fences the run
thread.py      the streamer on its own event loop in a worker thread
report.py      progress at a bounded rate: run tags, heartbeat, metadata
heartbeat.py   the heartbeat, and how the supervisor and the batch path judge a run alive
supervisor.py  the stream_supervisor sensor: one stream run per gateway
"""
