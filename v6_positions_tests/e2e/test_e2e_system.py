"""End to end: `v6-positions demo` (the code behind `make demo`) starts the simulator and Dagster's webserver
and daemon; everything is then checked through Dagster's GraphQL API, the simulator's control API, the Delta
tables and a real headless browser — the interfaces users and tools actually use."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from e2e_graphql import (
    ASSET_GRAPH,
    LATEST_CHECK_EXECUTIONS,
    LATEST_MATERIALIZATION_METADATA,
    LAUNCH_RUN,
    MATERIALIZED_PARTITIONS,
    RUNS,
    graphql,
)
from e2e_processes import alive, descendants, free_ports, port_is_listening
from polling import wait_for

from v6_positions.lake.tables import read_table
from v6_positions.simulator import demo_strategy_legs, load_book

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = PROJECT_ROOT / "build" / "e2e"
EXPECTED_EDGES = {
    ("strategy_registry", "streamed_positions"),
    ("streamed_positions", "positions"),
    ("position_queue", "queued_positions"),
    ("queued_positions", "positions"),
    ("positions", "strategy_risk"),
    ("strategy_registry", "strategy_risk"),
    ("positions", "underlying_risk"),
    ("positions", "underlying_closes"),
    ("underlying_closes", "underlying_risk"),
    ("positions", "book_eod"),
    ("strategy_registry", "book_eod"),
}
ASSET_NAMES = {"strategy_registry", "streamed_positions", "position_queue", "queued_positions", "positions",
               "strategy_risk", "underlying_closes", "underlying_risk", "book_eod"}  # fmt: skip


# The services may still be starting: a probe that raises means "not yet".
STARTING = (Exception,)


class System:
    def __init__(self, tmp: Path) -> None:
        self.ui_port, self.ib_port, self.control_port = free_ports(3)
        self.lake_uri = str(tmp / "lake")
        self.home = tmp / "dagster_home"
        self.url = f"http://127.0.0.1:{self.ui_port}"
        self.log_path = tmp / "demo.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            sys.executable, "-m", "v6_positions.cli", "demo",
            "--dagster-home", str(self.home), "--lake-uri", self.lake_uri,
            "--ib-port", str(self.ib_port), "--control-port", str(self.control_port),
            "--ui-port", str(self.ui_port),
        ]  # fmt: skip
        env = {key: value for key, value in os.environ.items() if not key.startswith(("V6_", "DAGSTER_"))}
        self.process = subprocess.Popen(
            argv, cwd=PROJECT_ROOT, env=env, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT
        )

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-60:])

    def gql(self, query: str, variables: dict | None = None) -> dict:
        return graphql(f"{self.url}/graphql", query, variables)

    def simulator_stats(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.control_port}/stats", timeout=5) as response:
            return json.loads(response.read())

    def runs(self, job_name: str, statuses: list[str] | None = None) -> list[dict]:
        run_filter: dict = {"pipelineName": job_name}
        if statuses:
            run_filter["statuses"] = statuses
        return self.gql(RUNS, {"filter": run_filter})["runsOrError"]["results"]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    started = System(tmp_path_factory.mktemp("e2e"))
    started.start()
    try:
        wait_for(lambda: started.gql("{ version }"), 180, "the Dagster webserver", every=1, tolerate=STARTING)
    except AssertionError:
        started.process.kill()
        raise AssertionError(f"the demo did not come up:\n{started.log_tail()}") from None
    yield started
    if started.process.poll() is None:
        started.process.send_signal(signal.SIGINT)
        try:
            started.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(started.process.pid, signal.SIGKILL)


def test_asset_graph_has_the_designed_lineage(system: System) -> None:
    nodes = system.gql(ASSET_GRAPH)["assetNodes"]
    names = {"/".join(node["assetKey"]["path"]) for node in nodes}
    assert names == ASSET_NAMES
    edges = {
        ("/".join(dep["path"]), "/".join(node["assetKey"]["path"]))
        for node in nodes
        for dep in node["dependencyKeys"]
    }
    assert edges == EXPECTED_EDGES


def test_the_sensor_started_one_stream_run_holding_exactly_the_active_legs(system: System) -> None:
    active_legs = len(demo_strategy_legs(load_book("demo")))
    wait_for(
        lambda: system.runs("position_stream", ["STARTED"]),
        150,
        "a STARTED stream run",
        every=1,
        tolerate=STARTING,
    )
    wait_for(
        lambda: system.simulator_stats()["lines_in_use"] == active_legs,
        60,
        f"simulator lines_in_use == {active_legs}",
        every=1,
        tolerate=STARTING,
    )
    stats = system.simulator_stats()
    assert stats["max_lines_in_use"] == active_legs
    assert stats["errors"].get("101", 0) == 0
    assert len(system.runs("position_stream", ["STARTED"])) == 1


def test_a_scheduled_batch_run_materialized_queued_partitions(system: System) -> None:
    def succeeded_scheduled_batch() -> list[dict]:
        return [
            run
            for run in system.runs("queued_positions_batch_job", ["SUCCESS"])
            if any(tag["key"] == "dagster/schedule_name" for tag in run["tags"])
        ]

    runs = wait_for(
        succeeded_scheduled_batch, 200, "a successful scheduled batch run", every=3, tolerate=STARTING
    )
    tags = {tag["key"]: tag["value"] for tag in runs[0]["tags"]}
    assert "dagster/asset_partition_range_start" in tags
    stats = system.gql(MATERIALIZED_PARTITIONS, {"assetKey": {"path": ["queued_positions"]}})
    partition_stats = stats["assetNodeOrError"]["partitionStats"]
    assert partition_stats["numMaterialized"] > 0


def test_checks_evaluate_and_pass(system: System) -> None:
    launched = system.gql(
        LAUNCH_RUN,
        {
            "params": {
                "selector": {
                    "repositoryLocationName": "v6_positions.definitions",
                    "repositoryName": "__repository__",
                    "jobName": "position_health_checks",
                },
                "runConfigData": {},
            }
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def finished() -> str | None:
        status = [r for r in system.runs("position_health_checks") if r["runId"] == run_id][0]["status"]
        return status if status in {"SUCCESS", "FAILURE", "CANCELED"} else None

    assert wait_for(finished, 120, "the health-check run to finish", every=1, tolerate=STARTING) == "SUCCESS"
    for asset, check in (
        ("streamed_positions", "lines_within_budget"),
        ("streamed_positions", "active_legs_fresh"),
        ("position_queue", "queue_backlog_age"),
        ("positions", "registry_legs_held"),
        ("strategy_registry", "registry_rows_valid"),
    ):
        executions = system.gql(
            LATEST_CHECK_EXECUTIONS, {"assetKey": {"path": [asset]}, "checkName": check}
        )["assetCheckExecutions"]
        assert executions, f"{asset}:{check} never evaluated"
        assert executions[0]["status"] == "SUCCEEDED", (asset, check, executions[0])


def test_a_scheduled_risk_refresh_plots_strategy_and_underlying_risk(system: System) -> None:
    def succeeded_scheduled_refresh() -> list[dict]:
        return [
            run
            for run in system.runs("risk_refresh_job", ["SUCCESS"])
            if any(tag["key"] == "dagster/schedule_name" for tag in run["tags"])
        ]

    wait_for(
        succeeded_scheduled_refresh, 200, "a successful scheduled risk refresh", every=3, tolerate=STARTING
    )
    for asset in ("strategy_risk", "underlying_risk"):
        node = system.gql(LATEST_MATERIALIZATION_METADATA, {"assetKey": {"path": [asset]}})
        (latest,) = node["assetNodeOrError"]["assetMaterializations"]
        plotted = {entry["label"] for entry in latest["metadataEntries"] if "floatValue" in entry}
        assert {"total_dollar_delta", "total_theta", "total_daily_pnl"} <= plotted, (asset, plotted)
    # The demo's three iron condors, one row each.
    assert set(read_table(system.lake_uri, "strategy_risk")["strategy_id"].to_list()) == {1, 2, 3}


def test_delta_tables_hold_the_simulators_book(system: System) -> None:
    book = load_book("demo")
    held = {key for key, position in book.positions.items() if position.position != 0}
    active = {leg.conid for leg in demo_strategy_legs(book)}

    def book_complete() -> bool:
        positions = read_table(system.lake_uri, "positions")
        return set(zip(positions["account"], positions["conid"], strict=True)) == held

    wait_for(book_complete, 150, "positions == the simulator's book", every=3, tolerate=STARTING)
    streamed = read_table(system.lake_uri, "streamed_positions")
    assert set(streamed["conid"].unique().to_list()) == active
    positions = read_table(system.lake_uri, "positions")
    # Active legs come from the stream (ticks, or the account's portfolio pushes), never from a batch.
    active_sources = set(positions.filter(pl.col("conid").is_in(list(active)))["source"].to_list())
    assert active_sources and active_sources <= {"stream", "portfolio"}, active_sources
    assert system.simulator_stats()["orders_received"] == 0


def test_the_ui_shows_the_asset_graph_in_a_real_browser(system: System, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is required: `make test` installs it (see the Makefile's 'browser')"
    # The community sign-up dialog would cover the graph on a fresh instance; dismiss it as a user would.
    assert system.gql("mutation { setNuxSeen }")["setNuxSeen"] is True
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    screenshot = SCREENSHOT_DIR / "asset-graph.png"
    page = f"{system.url}/asset-groups"  # the global lineage graph
    # A bounded virtual-time budget lets the single-page app render; the UI polls forever, so a large budget
    # never settles.
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1600,1000", "--hide-scrollbars",
        "--virtual-time-budget=8000",
    ]  # fmt: skip

    def rendered_asset_names() -> set[str]:
        dom = subprocess.run(
            [chromium, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=60
        ).stdout
        return {name for name in ASSET_NAMES if f">{name}<" in dom}

    wait_for(
        lambda: rendered_asset_names() == ASSET_NAMES,
        180,
        "every asset name on the lineage page",
        every=2,
        tolerate=STARTING,
    )
    subprocess.run([chromium, *flags, f"--screenshot={screenshot}", page], capture_output=True, timeout=60)
    assert screenshot.exists() and screenshot.stat().st_size > 50_000, "the screenshot is empty"


def test_stopping_leaves_no_process_behind(system: System) -> None:
    started = descendants(system.process.pid)
    assert started, "the demo started no processes"
    system.process.send_signal(signal.SIGINT)
    assert system.process.wait(timeout=90) == 0, system.log_tail()
    wait_for(lambda: not alive(started), 30, "every started process to exit", every=0.5, tolerate=STARTING)
    for port in (system.ui_port, system.ib_port, system.control_port):
        assert not port_is_listening(port), f"port {port} still listening"
