"""Dagster instance storage (named in dagster.yaml), not definitions.

sqlite_event_log.py  BatchedSqliteStorage: Dagster's SQLite storage writing an event batch in one transaction
"""
