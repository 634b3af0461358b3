"""Observations (PositionRows) from what IB sends, and where they go.

observations.py  rows from a streamed tick or a holding's payload
handlers.py      HandlerDispatcher, DeltaLakePositionWriter: who receives streamed rows (streamed_positions)
queue_buffer.py  QueueBuffer: coalesced position_queue writes, one commit per flush
sink.py          RowSink: streamed rows to the handlers, queued holdings to the queue buffer
"""
