import pytest

from v6_positions.config import ConfigError, Settings


def test_defaults_match_the_design_table():
    settings = Settings.from_env({})
    assert settings.lake_uri == "./data/lake"
    assert settings.lake_storage_options == {}
    assert (settings.ib_host, settings.ib_port, settings.ib_client_id) == ("127.0.0.1", 4002, 10)
    assert settings.ib_account == ""
    assert (settings.max_lines, settings.reserved_lines, settings.line_budget) == (100, 0, 100)
    assert settings.stream_sec_types == ("OPT",)
    assert settings.flush_interval_s == 1.0
    assert settings.batch_cron == "* * * * *"
    assert settings.reconcile_cron == "*/5 * * * *"
    assert settings.valuation_interval_s == 60.0


def test_environment_values_are_parsed():
    settings = Settings.from_env(
        {
            "V6_LAKE_URI": "s3://bucket/lake",
            "V6_LAKE_STORAGE_OPTIONS": '{"aws_region": "eu-west-1"}',
            "V6_IB_PORT": "4010",
            "V6_MAX_LINES": "80",
            "V6_RESERVED_LINES": "5",
            "V6_STREAM_SEC_TYPES": "opt, fop",
        }
    )
    assert settings.lake_uri == "s3://bucket/lake"
    assert settings.lake_storage_options == {"aws_region": "eu-west-1"}
    assert settings.ib_port == 4010
    assert settings.line_budget == 75
    assert settings.stream_sec_types == ("OPT", "FOP")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("V6_IB_PORT", "gateway", "V6_IB_PORT='gateway': not an integer"),
        ("V6_IB_PORT", "70000", "V6_IB_PORT=70000"),
        ("V6_MAX_LINES", "-3", "V6_MAX_LINES=-3"),
        ("V6_RESERVED_LINES", "-1", "V6_RESERVED_LINES=-1"),
        ("V6_RESERVED_LINES", "100", "V6_RESERVED_LINES=100"),
        ("V6_LAKE_STORAGE_OPTIONS", "{not json", "V6_LAKE_STORAGE_OPTIONS: malformed JSON"),
        ("V6_LAKE_STORAGE_OPTIONS", "[1, 2]", "V6_LAKE_STORAGE_OPTIONS: must be a JSON object"),
        ("V6_FLUSH_INTERVAL_S", "0", "V6_FLUSH_INTERVAL_S=0"),
        ("V6_FLUSH_INTERVAL_S", "nan", "V6_FLUSH_INTERVAL_S='nan': not a number"),
        ("V6_STREAM_SEC_TYPES", " , ", "V6_STREAM_SEC_TYPES"),
        ("V6_BATCH_CRON", "every minute", "V6_BATCH_CRON='every minute'"),
        ("V6_RECONCILE_CRON", "*/5 * *", "V6_RECONCILE_CRON='*/5 * *'"),
        ("V6_VALUATION_INTERVAL_S", "0", "V6_VALUATION_INTERVAL_S=0"),
        ("V6_VALUATION_INTERVAL_S", "soon", "V6_VALUATION_INTERVAL_S='soon': not a number"),
        ("V6_MAX_LINES", "abc", "V6_MAX_LINES='abc': not an integer"),
        ("V6_MAX_LINES", "2.5", "V6_MAX_LINES='2.5': not an integer"),
        ("V6_FLUSH_INTERVAL_S", "inf", "V6_FLUSH_INTERVAL_S='inf': not a number"),
    ],
)
def test_a_bad_value_names_the_variable(variable, value, message):
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env({variable: value})
    assert message in str(excinfo.value)


def test_storage_option_values_never_appear_in_errors():
    secret = "AKIA-very-secret"
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env({"V6_LAKE_STORAGE_OPTIONS": f'["{secret}"]'})
    assert secret not in str(excinfo.value)


def test_flags_override_the_environment_and_are_validated():
    settings = Settings.from_env({"V6_IB_PORT": "4010"}).with_overrides(ib_port=4020, ib_host=None)
    assert settings.ib_port == 4020
    assert settings.ib_host == "127.0.0.1"
    with pytest.raises(ConfigError, match="--max-lines=0"):
        settings.with_overrides(max_lines=0)
