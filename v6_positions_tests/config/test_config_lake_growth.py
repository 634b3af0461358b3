"""Settings that bound the lake's growth: history retention and the stream's buffer cap."""

from __future__ import annotations

import pytest

from v6_positions.config import ConfigError, Settings


def test_defaults_keep_all_history_and_cap_the_buffer() -> None:
    settings = Settings.from_env({})
    assert settings.history_retention_days == 0  # keep everything unless the user chooses
    assert settings.stream_buffer_cap == 100_000


def test_values_are_parsed() -> None:
    settings = Settings.from_env({"V6_HISTORY_RETENTION_DAYS": "30", "V6_STREAM_BUFFER_CAP": "5000"})
    assert (settings.history_retention_days, settings.stream_buffer_cap) == (30, 5000)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("V6_HISTORY_RETENTION_DAYS", "-1", "V6_HISTORY_RETENTION_DAYS=-1: must be >= 0"),
        ("V6_HISTORY_RETENTION_DAYS", "a week", "V6_HISTORY_RETENTION_DAYS='a week': not an integer"),
        ("V6_STREAM_BUFFER_CAP", "0", "V6_STREAM_BUFFER_CAP=0: must be >= 1"),
        ("V6_STREAM_BUFFER_CAP", "lots", "V6_STREAM_BUFFER_CAP='lots': not an integer"),
    ],
)
def test_a_bad_value_names_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env({variable: value})
    assert message in str(excinfo.value)


def test_a_bad_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--stream-buffer-cap=0"):
        Settings.from_env({}).with_overrides(stream_buffer_cap=0)
