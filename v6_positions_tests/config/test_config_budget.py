"""The one line budget, blank variables, and the round trip of every setting through its V6_* text."""

from __future__ import annotations

import pytest

from v6_positions.config import ENV_NAMES, ConfigError, LineBudget, Settings


def test_the_budget_is_the_limit_minus_the_reserve() -> None:
    settings = Settings.from_env({"V6_MAX_LINES": "80", "V6_RESERVED_LINES": "5"})
    assert settings.budget == LineBudget(max_lines=80, reserved=5)
    assert settings.line_budget == settings.budget.available == 75


def test_a_reserve_at_the_limit_names_the_flag_and_the_limit() -> None:
    settings = Settings.from_env({"V6_MAX_LINES": "80"})
    with pytest.raises(ConfigError, match=r"--reserved-lines=80: must be below the line limit 80"):
        settings.with_overrides(reserved_lines=80)


def test_a_blank_variable_keeps_the_default() -> None:
    assert Settings.from_env({"V6_IB_HOST": "   ", "V6_MAX_LINES": ""}) == Settings()


def test_settings_survive_the_trip_through_their_variables() -> None:
    """What `env_text` writes, `from_env` reads back equal: the resources carry settings this way."""
    settings = Settings(
        lake_storage_options={"region": "eu-west-1"},
        stream_sec_types=("OPT", "FOP"),
        flush_interval_s=0.1,
        ib_account="DU7",
        rotation_lines=0,
    )
    variables = {ENV_NAMES[name]: settings.env_text(name) for name in ENV_NAMES}
    assert Settings.from_env(variables) == settings
