"""The connection: one read-only ib_async session to the gateway that stays up.

session.py        IBSession: connect (readonly), heartbeat, reconnect with backoff, clientId waits
client_ids.py     which clientIds this project uses on a gateway (the stream's and its helpers')
backoff.py        exponential backoff with jitter (reconnects, line probes)
message_codes.py  IB's message codes grouped by what they mean here
position_log.py   one summary line per connect instead of ib_async's line per position
"""
