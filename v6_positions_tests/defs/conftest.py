"""Fixtures for the Dagster tests: a persistent test instance and Definitions bound to a temp lake."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import dagster as dg
import pytest

from v6_positions.config import Settings
from v6_positions.definitions import build_definitions
from v6_positions.defs.heartbeat import GATEWAY_TAG, HEARTBEAT_TAG, STREAM_JOB_NAME
from v6_positions.defs.resources import HealthThresholds, StreamSupervision


@pytest.fixture
def instance(tmp_path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as test_instance:
        yield test_instance


@pytest.fixture
def make_defs(lake_root: str) -> Callable[..., dg.Definitions]:
    """Definitions on the temp lake; `port` points the IB resource at a simulator, the rest tune timings."""

    def make(
        port: int = 4002,
        *,
        max_lines: int = 100,
        thresholds: HealthThresholds | None = None,
        **supervision: float,
    ) -> dg.Definitions:
        settings = Settings(lake_uri=lake_root, ib_port=port, max_lines=max_lines, flush_interval_s=0.5)
        timings = {"heartbeat_interval_s": 0.5, "progress_interval_s": 1.0, **supervision}
        return build_definitions(settings, StreamSupervision(**timings), thresholds)

    return make


@pytest.fixture
def add_stream_run(instance: dg.DagsterInstance) -> Callable[..., dg.DagsterRun]:
    """Records a stream run as the run storage would hold it, without running anything."""

    def add(
        gateway: str,
        status: dg.DagsterRunStatus = dg.DagsterRunStatus.STARTED,
        heartbeat: float | None = None,
    ) -> dg.DagsterRun:
        tags = {GATEWAY_TAG: gateway}
        if heartbeat is not None:
            tags[HEARTBEAT_TAG] = f"{heartbeat:.3f}"
        run = dg.DagsterRun(job_name=STREAM_JOB_NAME, run_id=str(uuid.uuid4()), status=status, tags=tags)
        return instance.add_run(run)

    return add
