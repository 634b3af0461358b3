"""One stream run per gateway whatever launches it: runs of the stream job launched from the Launchpad
(GraphQL, no tags given) or re-executed from a stream run wait in the queue of an instance configured like
deploy/local/dagster.yaml while another one holds the gateway — no sensor involved; and a run that escaped
the queue (its tag edited away) does not connect while an older stream run of its gateway is alive.

The run coordinator and its daemon are Dagster's own; only the run launcher is Dagster's test launcher, which
records a launch instead of starting a process (nothing here needs a stream to run)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from dagster_graphql.test.utils import execute_dagster_graphql

from v6_positions.definitions import defs
from v6_positions.defs.stream.heartbeat import (
    GATEWAY_TAG,
    HEARTBEAT_TAG,
    LINES_TAG,
    RELEASED_TAG,
    STREAM_JOB_NAME,
    judge_stream_runs,
    write_heartbeat,
)

LOCAL_CONFIG = Path(__file__).resolve().parents[3] / "deploy" / "local" / "dagster.yaml"
# The gateway the code location's IB resource talks to (and its supervisor sensor caps).
GATEWAY = defs.resources["ib"].gateway
LOCATION = "v6_positions.definitions"

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
REEXECUTE = """
mutation Reexecute($params: ReexecutionParams!) {
  launchRunReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""


@pytest.fixture
def queued_instance(
    tmp_path: Path, request: pytest.FixtureRequest, instance_storage: str
) -> Iterator[dg.DagsterInstance]:
    """A test instance with the run coordinator of deploy/local/dagster.yaml (SQLite or Postgres storage)."""
    shipped = yaml.safe_load(LOCAL_CONFIG.read_text())
    overrides = {
        "run_coordinator": shipped["run_coordinator"],
        "run_launcher": {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"},
    }
    if instance_storage == "postgres":
        overrides["storage"] = request.getfixturevalue("postgres_server").dagster_storage()
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(overrides, temp_dir=str(home)) as instance:
        yield instance


@pytest.fixture
def workspace(queued_instance: dg.DagsterInstance) -> Iterator[WorkspaceProcessContext]:
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="v6_positions.definitions", attribute="defs"),
        location_name=LOCATION,
    )
    with WorkspaceProcessContext(queued_instance, InProcessWorkspaceLoadTarget([origin])) as context:
        yield context


def launch_from_the_launchpad(workspace: WorkspaceProcessContext, job_name: str) -> str:
    """What the Launchpad's "Launch Run" sends: the job and its config, no tags."""
    params = {
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": "__repository__",
            "jobName": job_name,
        },
        "runConfigData": {},
    }
    result = execute_dagster_graphql(workspace.create_request_context(), LAUNCH, {"params": params})
    launched = result.data["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def reexecute(workspace: WorkspaceProcessContext, parent_run_id: str) -> str:
    """The run page's "Re-execute all" (the automatic retry daemon creates its run the same way)."""
    params = {"parentRunId": parent_run_id, "strategy": "ALL_STEPS"}
    result = execute_dagster_graphql(workspace.create_request_context(), REEXECUTE, {"params": params})
    launched = result.data["launchRunReexecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def dequeue(workspace: WorkspaceProcessContext) -> None:
    """One iteration of the daemon that launches queued runs within the coordinator's limits."""
    list(QueuedRunCoordinatorDaemon(interval_seconds=1).run_iteration(workspace))


def statuses(instance: dg.DagsterInstance, *run_ids: str) -> list[dg.DagsterRunStatus]:
    return [instance.get_run_by_id(run_id).status for run_id in run_ids]


@pytest.mark.both_storages
def test_stream_runs_from_the_launchpad_and_reexecution_are_capped_by_the_gateway_tag(
    queued_instance: dg.DagsterInstance, workspace: WorkspaceProcessContext
):
    instance = queued_instance
    first = launch_from_the_launchpad(workspace, STREAM_JOB_NAME)
    second = launch_from_the_launchpad(workspace, STREAM_JOB_NAME)
    checks = launch_from_the_launchpad(workspace, "position_health_checks")
    # The job itself carries the gateway: no launcher had to add it.
    assert instance.get_run_by_id(first).tags[GATEWAY_TAG] == GATEWAY
    assert instance.get_run_by_id(second).tags[GATEWAY_TAG] == GATEWAY

    dequeue(workspace)
    Q, STARTING = dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING
    assert statuses(instance, first, second, checks) == [STARTING, Q, STARTING]  # the others are not held up

    # The first run streams (as its op would stamp it); someone re-executes it from its run page.
    write_heartbeat(instance, first, extra={LINES_TAG: "12"})
    child = reexecute(workspace, first)
    child_run = instance.get_run_by_id(child)
    assert child_run.tags[GATEWAY_TAG] == GATEWAY
    assert child_run.tags[HEARTBEAT_TAG] == instance.get_run_by_id(first).tags[HEARTBEAT_TAG]  # copied
    dequeue(workspace)
    assert statuses(instance, first, second, child) == [STARTING, Q, Q]

    # The copied heartbeat is not the child's: it does not make the child look alive.
    judged = {s.run_id: s for s in judge_stream_runs(instance, GATEWAY, stale_after_s=60, startup_grace_s=60)}
    assert judged[first].has_beaten
    assert not judged[child].has_beaten

    # Once the first run is over, exactly one waiting run gets the gateway.
    instance.report_run_failed(instance.get_run_by_id(first))
    dequeue(workspace)
    dequeue(workspace)
    assert sorted(s.value for s in statuses(instance, second, child)) == ["QUEUED", "STARTING"]


@pytest.mark.timeout(120)
def test_a_stream_run_that_escaped_the_queue_does_not_connect_while_an_older_one_streams(
    sim, make_defs, instance, add_stream_run
):
    """A run started with its gateway tag edited away (so no queue held it back) finds the older live stream
    run of its gateway and stops before connecting: the gateway never sees it."""
    gateway = f"127.0.0.1:{sim.port}"
    older = add_stream_run(gateway, heartbeat=time.time())
    job = make_defs(sim.port).resolve_job_def(STREAM_JOB_NAME)
    result = job.execute_in_process(
        instance=instance,
        run_config={"ops": {"stream_positions": {"config": {"duration_s": 30.0}}}},
        tags={GATEWAY_TAG: "edited-away"},
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert f"stream run {older.run_id} already streams from {gateway}" in str(failure.step_failure_data.error)
    stats = sim.stats()
    assert stats["connections_accepted"] == 0 and stats["max_lines_in_use"] == 0
    run = instance.get_run_by_id(result.run_id)
    assert run.tags[GATEWAY_TAG] == gateway  # put back, so supervision and checks see the run
    assert run.tags[RELEASED_TAG] == run.run_id  # nothing to wait for: it never connected
