"""Every V6_* setting reaches the run containers, and runs read their settings where they execute."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

import v6_positions.config as config_module
from v6_positions.config import ENV_NAMES, Settings
from v6_positions.definitions import build_definitions
from v6_positions.defs.resources import IBResource, LakeResource, resources_from_settings, settings_of

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as test_instance:
        yield test_instance


def test_run_containers_get_every_setting_config_py_reads() -> None:
    launcher = yaml.safe_load((DEPLOY / "production" / "dagster.yaml").read_text())["run_launcher"]
    passed = {entry.split("=", 1)[0] for entry in launcher["config"]["env_vars"]}
    # Every variable config.py mentions, not just the ones registered in ENV_NAMES.
    read = set(re.findall(r"\bV6_[A-Z0-9_]+\b", Path(config_module.__file__).read_text()))
    assert read == set(ENV_NAMES.values())
    assert read <= passed, f"missing from deploy/production/dagster.yaml env_vars: {sorted(read - passed)}"
    stale = {name for name in passed if name.startswith("V6_")} - read
    assert not stale, f"env_vars names settings config.py does not know: {sorted(stale)}"


def test_every_run_setting_survives_the_trip_through_the_resources(tmp_path: Path) -> None:
    """A setting added to config.py but not to the resources would silently run with its default."""
    defaults = Settings()
    changed = {
        "lake_uri": str(tmp_path / "lake"),
        "lake_storage_options": {"region": "eu-west-1"},
        "ib_host": "gw.example",
        "ib_port": 7497,
        "ib_client_id": 31,
        "ib_account": "DU7",
        "max_lines": 90,
        "reserved_lines": 5,
        "stream_sec_types": ("OPT", "FOP"),
        "flush_interval_s": 0.25,
        "history_retention_days": 30,
        "stream_buffer_cap": 500,
        "rotation_lines": 3,
        "valuation_interval_s": 15.0,
        "risk_free_rate": 0.05,
    }
    # The crons shape schedules where the code location loads; they are not a run's settings.
    run_fields = {f.name for f in dataclasses.fields(Settings)} - {"batch_cron", "reconcile_cron"}
    assert set(changed) == run_fields, "a new setting: add it to the resources and to this test"
    explicit = dataclasses.replace(defaults, **changed)
    assert all(getattr(explicit, name) != getattr(defaults, name) for name in changed)

    resources = resources_from_settings(explicit)

    assert settings_of(resources["lake"], resources["ib"]) == explicit


ENV_AT_LOAD = {
    "V6_IB_HOST": "gateway-a",
    "V6_IB_PORT": "4001",
    "V6_MAX_LINES": "50",
    "V6_STREAM_SEC_TYPES": "OPT",
    "V6_FLUSH_INTERVAL_S": "2",
    "V6_VALUATION_INTERVAL_S": "30",
    "V6_LAKE_STORAGE_OPTIONS": '{"aws_secret_access_key": "load-Zq81"}',
}
ENV_AT_RUN = {
    "V6_IB_HOST": "gateway-b",
    "V6_IB_PORT": "4002",
    "V6_MAX_LINES": "70",
    "V6_STREAM_SEC_TYPES": "OPT,FOP",
    "V6_FLUSH_INTERVAL_S": "3.5",
    "V6_VALUATION_INTERVAL_S": "45",
    "V6_LAKE_STORAGE_OPTIONS": '{"aws_secret_access_key": "run-Zq82"}',
}


def _probe(seen: list[Settings]) -> dg.AssetsDefinition:
    @dg.asset
    def settings_probe(lake: LakeResource, ib: IBResource) -> None:
        seen.append(settings_of(lake, ib))

    return settings_probe


def test_a_run_reads_settings_from_the_environment_it_executes_in(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The code location is loaded with one environment (webserver/daemon); the run executes with another
    (its container): the run gets the second, and neither's values enter the run's stored config."""
    lake_uri = str(tmp_path / "lake")
    for name, value in {**ENV_AT_LOAD, "V6_LAKE_URI": lake_uri}.items():
        monkeypatch.setenv(name, value)
    defs = build_definitions(Settings.from_env())
    for name, value in ENV_AT_RUN.items():
        monkeypatch.setenv(name, value)

    seen: list[Settings] = []
    result = dg.materialize([_probe(seen)], resources=defs.resources, instance=instance)

    assert result.success
    (settings,) = seen
    assert (settings.ib_host, settings.ib_port, settings.max_lines) == ("gateway-b", 4002, 70)
    assert settings.stream_sec_types == ("OPT", "FOP")
    assert (settings.flush_interval_s, settings.valuation_interval_s) == (3.5, 45.0)
    assert settings.lake_storage_options == {"aws_secret_access_key": "run-Zq82"}
    assert settings.lake_uri == lake_uri
    stored = str(instance.get_run_by_id(result.run_id).run_config)
    snapshot = str(instance.get_job_snapshot(instance.get_run_by_id(result.run_id).job_snapshot_id))
    for text in (stored, snapshot):
        assert "Zq8" not in text and "gateway-" not in text


def test_explicit_settings_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Settings given in code (tests, command-line flags) are used as given, whatever the environment says."""
    for name, value in ENV_AT_RUN.items():
        monkeypatch.setenv(name, value)
    explicit = Settings(lake_uri=str(tmp_path / "lake"), ib_host="sim", ib_port=7497, flush_interval_s=0.25)
    defs = build_definitions(explicit)

    seen: list[Settings] = []
    assert dg.materialize([_probe(seen)], resources=defs.resources, instance=instance).success

    (settings,) = seen
    assert (settings.ib_host, settings.ib_port, settings.flush_interval_s) == ("sim", 7497, 0.25)
    assert settings.stream_sec_types == ("OPT",) and settings.lake_storage_options == {}


def test_a_bad_value_in_the_run_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    monkeypatch.setenv("V6_LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.setenv("V6_FLUSH_INTERVAL_S", "2")
    defs = build_definitions(Settings.from_env())
    monkeypatch.setenv("V6_FLUSH_INTERVAL_S", "soon")

    result = dg.materialize([_probe([])], resources=defs.resources, instance=instance, raise_on_error=False)

    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "V6_FLUSH_INTERVAL_S='soon': not a number" in str(failure.step_failure_data.error)
