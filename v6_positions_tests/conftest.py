"""Shared fixtures: a temporary lake root and a running gateway simulator with the demo book."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from v6_positions.simulator import SimulatorThread, load_book

# The Dagster fixtures (instances on SQLite and PostgreSQL, Definitions on a temp lake): defs/ and instance/.
pytest_plugins = ("dagster_fixtures",)


@pytest.fixture
def lake_root(tmp_path) -> str:
    root = tmp_path / "lake"
    root.mkdir()
    return str(root)


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    """The demo book behind a simulator on a free port; portfolio pushed every 2 s."""
    with SimulatorThread(load_book("demo"), portfolio_interval=2.0) as running:
        yield running


@pytest.fixture(scope="session")
def s3_server() -> Iterator[object]:
    """A local S3 API (moto's server mode) on a free port for the whole session; one bucket per lake."""
    from s3_server import S3Server  # moto and boto3 load only when a test needs S3

    with S3Server() as server:
        yield server
