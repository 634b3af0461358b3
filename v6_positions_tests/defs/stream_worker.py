"""Runs the stream job in this process against the instance at $DAGSTER_HOME: the SIGKILL test's victim.

Settings come from the V6_* environment, as in a deployed run worker.
"""

from __future__ import annotations

import sys

import dagster as dg

from v6_positions.config import Settings
from v6_positions.definitions import build_definitions
from v6_positions.defs.heartbeat import GATEWAY_TAG, STREAM_JOB_NAME
from v6_positions.defs.resources import StreamSupervision


def main() -> int:
    settings = Settings.from_env()
    defs = build_definitions(settings, StreamSupervision(heartbeat_interval_s=0.5, progress_interval_s=1.0))
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def(STREAM_JOB_NAME).execute_in_process(
            instance=instance,
            tags={GATEWAY_TAG: f"{settings.ib_host}:{settings.ib_port}"},
            raise_on_error=False,
        )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
