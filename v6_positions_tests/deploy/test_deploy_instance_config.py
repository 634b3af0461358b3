"""The instance configurations we ship are valid for this Dagster release and cap stream runs by the tag the
stream job really carries (a renamed tag would silently allow two streams on one gateway)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config

from v6_positions.defs.stream.heartbeat import GATEWAY_TAG

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.parametrize("flavour", ["local", "production"])
def test_instance_config_is_valid_and_caps_stream_runs_per_gateway(
    flavour: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB", "V6_IMAGE"):
        monkeypatch.setenv(name, "x")
    shutil.copy(DEPLOY / flavour / "dagster.yaml", tmp_path / "dagster.yaml")

    config, _ = dagster_instance_config(str(tmp_path))

    coordinator = config["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator"
    limits = coordinator["config"]["tag_concurrency_limits"]
    assert {"key": GATEWAY_TAG, "limit": 1, "value": {"applyLimitPerUniqueValue": True}} in limits


def test_production_config_keeps_secrets_in_the_environment() -> None:
    production = yaml.safe_load((DEPLOY / "production" / "dagster.yaml").read_text())
    database = production["storage"]["postgres"]["postgres_db"]
    assert database["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert "V6_LAKE_STORAGE_OPTIONS" in production["run_launcher"]["config"]["env_vars"]
