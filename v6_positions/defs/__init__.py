"""Dagster: the definitions around the library layers (`lake/`, `ib/`, `risk/` import no Dagster).

resources.py       where the lake is, which gateway, how the stream run is supervised, health thresholds
assets.py          one asset per Delta table (the UI's lineage), `queued_positions` partitioned per contract
checks.py          health checks on the tables and the stream
reconciliation.py  book_matches_ib: the book against IB's position list, its job and schedule
jobs.py            the batch, health-check, maintenance and clean-up jobs
schedules.py       the health-check, maintenance and clean-up schedules
metadata.py        what the UI shows: counts, ages, a small table of the newest rows
stream/            the long-lived stream run and its supervisor sensor
batch/             the batch path: partitions, queue sensor, batch schedule, refresh, clean-up
risk/              risk per strategy and per underlying, the day's close
"""
