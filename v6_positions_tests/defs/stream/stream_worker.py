"""Runs the stream job in this process against the instance at $DAGSTER_HOME: the SIGKILL test's victim.

Settings come from the V6_* environment, as in a deployed run worker.
"""

from __future__ import annotations

import sys

import dagster as dg

from v6_positions.config import Settings
from v6_positions.definitions import build_definitions
from v6_positions.defs.resources import StreamSupervision
from v6_positions.defs.stream.heartbeat import STREAM_JOB_NAME


def main() -> int:
    settings = Settings.from_env()
    defs = build_definitions(settings, StreamSupervision(heartbeat_interval_s=0.5, progress_interval_s=1.0))
    with dg.DagsterInstance.get() as instance:
        # No tags given: the job carries its gateway tag, as for a run launched from the Launchpad.
        job = defs.resolve_job_def(STREAM_JOB_NAME)
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
