"""The Dagster fixtures (a plugin of the root conftest): a persistent test instance, Definitions on a lake."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from postgres_server import PostgresServer, start_postgres

from v6_positions.config import Settings
from v6_positions.definitions import build_definitions
from v6_positions.defs.resources import HealthThresholds, StreamSupervision
from v6_positions.defs.stream.heartbeat import GATEWAY_TAG, HEARTBEAT_TAG, STREAM_JOB_NAME
from v6_positions.instance.sqlite_event_log import EVENT_BATCH_ENV

# Tests that run on both instance storages: the embedded SQLite one and dagster-postgres on a real server.
# A module name maps to the tests of it that run on both (None: all of them); any other test can opt in
# with `@pytest.mark.both_storages`.
BOTH_STORAGES: dict[str, set[str] | None] = {
    "test_defs_sensor": None,
    "test_defs_partitions": None,
    "test_defs_schedule": None,
    "test_defs_checks": None,
    "test_defs_batch": None,
    "test_defs_risk": {
        "test_a_strategy_with_a_closed_or_stale_leg_fails_its_check",
        "test_book_eod_backfill_of_two_past_days_from_history",
    },
    "test_defs_kill": {"test_killed_stream_run_is_failed_and_replaced_without_losing_rows"},
}
STORAGES = ("sqlite", "postgres")
PRODUCTION_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "production" / "dagster.yaml"
LOCAL_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "local" / "dagster.yaml"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_storages: run the test on a SQLite and a Postgres instance")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "instance_storage" not in metafunc.fixturenames:
        return
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    chosen = BOTH_STORAGES.get(module, set())
    if (
        chosen is None
        or metafunc.function.__name__ in chosen
        or metafunc.definition.get_closest_marker("both_storages")
    ):
        metafunc.parametrize("instance_storage", STORAGES, indirect=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the session, started on first use, removed at the end."""
    with start_postgres() as server:
        yield server


@pytest.fixture
def instance_storage(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


def local_sqlite_storage(home: Path) -> dict[str, object]:
    """deploy/local/dagster.yaml's `storage:` block (what `make demo` runs on), rooted at `home`."""
    custom = dict(yaml.safe_load(LOCAL_CONFIG.read_text())["storage"]["custom"])
    custom["config"] = {"base_dir": str(home)}
    return {"custom": custom}


def deployed_dagster_env() -> dict[str, str]:
    """The Dagster settings deploy/production/dagster.yaml gives run containers (`NAME=value` entries)."""
    launcher = yaml.safe_load(PRODUCTION_CONFIG.read_text())["run_launcher"]
    pairs = (entry.split("=", 1) for entry in launcher["config"]["env_vars"] if "=" in entry)
    return {name: value for name, value in pairs if name.startswith("DAGSTER_")}


@pytest.fixture
def instance(
    tmp_path, request: pytest.FixtureRequest, instance_storage: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    """A persistent test instance whose dagster.yaml lives in $DAGSTER_HOME (subprocesses open the same one):
    embedded SQLite as deploy/local/dagster.yaml configures it, or a fresh database of its own on the
    session's Postgres server, written to with the event settings each deployment's runs get (also inherited
    by subprocess run workers)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    overrides: dict[str, object] = {}
    if instance_storage == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        overrides["storage"] = server.dagster_storage()
        event_env = deployed_dagster_env()
    else:
        overrides["storage"] = local_sqlite_storage(home)
        event_env = EVENT_BATCH_ENV
    for name, value in event_env.items():
        monkeypatch.setenv(name, value)
    with dg.instance_for_test(overrides, temp_dir=str(home)) as test_instance:
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
