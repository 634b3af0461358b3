"""V6_LAKE_STORAGE_OPTIONS carries credentials: they must never reach logs, tags, metadata or snapshots.

A real instance, the gateway simulator and a lake on the session's S3 API server, configured the way a user
does it (V6_* environment variables). A stream run, the sensors, a batch run, the checks and maintenance run
with a recognisable secret and session token; then every place Dagster keeps anything is searched for them:
the event log, run tags and run config, job and execution-plan snapshots, the repository snapshot (resource
config), sensor results, every file under the instance's home (SQLite databases, captured logs), and what
was logged or printed while it ran.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
from defs_helpers import apply_partitions, batch_requests, queue_tick, tick

from v6_positions.commands.launch import register_demo_legs
from v6_positions.config import ConfigError, Settings
from v6_positions.definitions import build_definitions
from v6_positions.defs.jobs import BATCH_JOB_NAME
from v6_positions.defs.resources import StreamSupervision
from v6_positions.defs.stream.heartbeat import GATEWAY_TAG, STREAM_JOB_NAME
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.tables import read_table


def _files_containing(root: Path, needles: list[str]) -> dict[str, list[str]]:
    """Which files under `root` hold which needle (raw bytes: SQLite pages and logs alike)."""
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits = [n for n in needles if n.encode() in data]
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


def _leaks(text: str, needles: list[str]) -> list[str]:
    return [n for n in needles if n in text]


@pytest.mark.timeout(180)
def test_storage_secrets_never_reach_dagster_or_logs(
    s3_server, sim, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch, caplog, capfd
) -> None:
    secret = f"v6-secret-{uuid.uuid4().hex}"
    token = f"v6-token-{uuid.uuid4().hex}"
    needles = [secret, token]
    bucket = s3_server.new_bucket()
    root = f"s3://{bucket}/lake"
    options = s3_server.storage_options(AWS_SECRET_ACCESS_KEY=secret, AWS_SESSION_TOKEN=token)
    monkeypatch.setenv("V6_LAKE_URI", root)
    monkeypatch.setenv("V6_LAKE_STORAGE_OPTIONS", json.dumps(options))
    monkeypatch.setenv("V6_IB_PORT", str(sim.port))
    monkeypatch.setenv("V6_FLUSH_INTERVAL_S", "0.5")
    caplog.set_level(logging.DEBUG)

    settings = Settings.from_env()
    assert secret not in repr(settings) and token not in repr(settings)
    defs = build_definitions(settings, StreamSupervision(heartbeat_interval_s=0.5, progress_interval_s=1.0))
    register_demo_legs(root, options)

    # The supervisor asks for a stream run; it streams; then the queue sensor, batch, checks, maintenance.
    supervised = tick(defs, instance)
    sensor_output = repr(supervised)
    stream = defs.resolve_job_def(STREAM_JOB_NAME).execute_in_process(
        instance=instance,
        run_config={"ops": {"stream_positions": {"config": {"duration_s": 4.0}}}},
        tags={GATEWAY_TAG: f"127.0.0.1:{sim.port}"},
    )
    assert stream.success
    assert read_table(root, "streamed_positions", options).height > 0  # the secret really was used
    queued = queue_tick(defs, instance)
    sensor_output += repr(queued)
    assert apply_partitions(instance, queued)
    requests = batch_requests(defs, instance)
    sensor_output += repr(requests)
    batch = defs.resolve_job_def(BATCH_JOB_NAME).execute_in_process(instance=instance, tags=requests[0].tags)
    assert batch.success and PositionQueue(root, options).backlog().due == 0
    defs.resolve_job_def("position_health_checks").execute_in_process(instance=instance, raise_on_error=False)
    maintenance = defs.resolve_job_def("lake_maintenance_job").execute_in_process(instance=instance)
    assert maintenance.success

    # Dagster's records, read through the instance (as the UI and GraphQL do).
    runs = instance.get_runs()
    assert len(runs) >= 4
    for run in runs:
        assert not _leaks(json.dumps(dict(run.tags)), needles), f"run {run.run_id} tags"
        assert not _leaks(json.dumps(run.run_config, default=str), needles), f"run {run.run_id} run_config"
        assert not _leaks(serialize_value(run), needles), f"run {run.run_id}"
        job_snapshot = instance.get_job_snapshot(run.job_snapshot_id)
        assert not _leaks(serialize_value(job_snapshot), needles), f"job snapshot of {run.job_name}"
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        assert not _leaks(serialize_value(plan), needles), f"execution plan of {run.job_name}"
        for entry in instance.all_logs(run.run_id):
            assert not _leaks(serialize_value(entry), needles), f"event of {run.job_name}: {entry.message}"
    repository = serialize_value(RepositorySnap.from_def(defs.get_repository_def()))
    assert "V6_LAKE_STORAGE_OPTIONS" in repository  # the resource config names the variable, not its value
    assert not _leaks(repository, needles)
    assert not _leaks(sensor_output, needles)

    # Everything the instance wrote to disk (event log and run databases, captured logs), as raw bytes.
    home = Path(instance.root_directory)
    assert _files_containing(home, ["streamed_positions"])  # control: the search does see the event log
    assert _files_containing(home, needles) == {}

    # What library code and Dagster logged, and what reached the console.
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert logged and not _leaks(logged, needles)
    out, err = capfd.readouterr()
    assert not _leaks(out + err, needles)
    assert os.environ["V6_LAKE_STORAGE_OPTIONS"].count(secret) == 1  # control: the secret was in play


def test_credentials_given_as_values_are_refused_naming_the_key_not_the_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A literal resource config value is stored in Dagster's snapshots and shown in the UI; credentials
    must reach the resource as the EnvVar V6_LAKE_STORAGE_OPTIONS."""
    monkeypatch.delenv("V6_LAKE_STORAGE_OPTIONS", raising=False)
    secret = f"v6-secret-{uuid.uuid4().hex}"
    explicit = Settings(lake_uri="s3://bucket/lake", lake_storage_options={"AWS_SECRET_ACCESS_KEY": secret})
    with pytest.raises(ConfigError) as info:
        build_definitions(explicit)
    assert "V6_LAKE_STORAGE_OPTIONS" in str(info.value) and "AWS_SECRET_ACCESS_KEY" in str(info.value)
    assert secret not in str(info.value)
    # Options without credentials (a region, an endpoint) may be given as values.
    harmless = Settings(lake_uri=str(tmp_path / "lake"), lake_storage_options={"AWS_REGION": "eu-west-1"})
    assert build_definitions(harmless).resources["lake"].storage_options == {"AWS_REGION": "eu-west-1"}
