"""Dagster resources: where the lake is, which gateway to talk to, how the stream run is supervised.

Values come from `v6_positions.config.Settings` (the one place that parses the environment);
`resources_from_settings` turns a `Settings` into the resource dict `definitions.py` assembles.

Settings read where runs execute: a setting that came from a `V6_*` variable is passed to its resource as
`EnvVar` (`{"env": "V6_..."}` in the config), so Dagster resolves it in the process that runs the step
(a run container's own environment), and the value (storage credentials included) never enters the config
snapshot or the UI. A setting given explicitly (tests, command-line flags) is passed as its value.
Fields whose type Dagster cannot back with an environment variable (lists, floats) hold the variable's text;
`settings_of` parses and validates everything the way `Settings.from_env` does, naming the variable.
"""

from __future__ import annotations

import json
import os

import dagster as dg

from v6_positions.config import ENV_NAMES, ConfigError, Settings, credential_keys

# The stream owns `client_id`; the batch path's zero-line requests use the next id so both can be connected
# at once (IB rejects a second session on a clientId that is in use).
BATCH_CLIENT_ID_OFFSET = 1


class LakeResource(dg.ConfigurableResource):
    """Root of the Delta tables. Assets write through `v6_positions.lake`, never through an IO manager."""

    root_uri: str
    storage_options_json: str = "{}"
    history_retention_days: int = 0

    @property
    def storage_options(self) -> dict[str, str] | None:
        parsed = json.loads(self.storage_options_json or "{}")
        if not isinstance(parsed, dict):
            raise ValueError("storage_options_json must be a JSON object")
        return {str(k): str(v) for k, v in parsed.items()} or None


class IBResource(dg.ConfigurableResource):
    """The IB Gateway/TWS socket and the line budget. Every connection is read-only; there is no switch."""

    host: str = "127.0.0.1"
    port: int = 4002
    client_id: int = 10
    account: str = ""
    max_lines: int = 100
    reserved_lines: int = 0
    # As V6_STREAM_SEC_TYPES / V6_FLUSH_INTERVAL_S / V6_VALUATION_INTERVAL_S write them (see module doc).
    stream_sec_types: str = "OPT"
    flush_interval_s: str = "1.0"
    valuation_interval_s: str = "60.0"
    stream_buffer_cap: int = 100_000
    rotation_lines: int = 10

    @property
    def line_budget(self) -> int:
        return self.max_lines - self.reserved_lines

    @property
    def gateway(self) -> str:
        """The value of the stream run's concurrency tag: one stream per gateway."""
        return f"{self.host}:{self.port}"

    @property
    def batch_client_id(self) -> int:
        return self.client_id + BATCH_CLIENT_ID_OFFSET


class StreamSupervision(dg.ConfigurableResource):
    """Timings of the stream run and of the sensor that judges whether it is alive."""

    heartbeat_interval_s: float = 10.0
    progress_interval_s: float = 15.0
    # A started run whose newest heartbeat is older than this is dead (a killed worker stays STARTED forever).
    stale_after_s: float = 60.0
    # A run that has not written its first heartbeat yet (process start, code load) gets this long.
    startup_grace_s: float = 120.0
    # After a stream run failed, wait this long before launching the next one (no crash loop at tick rate).
    restart_backoff_s: float = 15.0
    # A stream run judged dead on another host (its process cannot be probed) is waited for this long to say
    # it released the gateway before its replacement starts (then the gateway's clientId check fences).
    release_timeout_s: float = 120.0


class HealthThresholds(dg.ConfigurableResource):
    """Limits the asset checks hold the data to."""

    # An active leg the account holds must have a row (stream or batch) at most this old.
    freshness_window_s: float = 300.0
    # The oldest pending queue item may wait at most this long for its batch refresh.
    max_queue_age_s: float = 900.0


def settings_of(lake: LakeResource, ib: IBResource) -> Settings:
    """The library layers take a `Settings`; rebuild one from the two resources (parsed and validated as the
    environment is: a bad value raises `ConfigError` naming its V6_* variable). `batch_cron` is not carried:
    it shapes the schedule where the code location loads, it is not a run's setting."""
    return Settings.from_env(
        {
            ENV_NAMES["lake_uri"]: lake.root_uri,
            ENV_NAMES["lake_storage_options"]: lake.storage_options_json,
            ENV_NAMES["ib_host"]: ib.host,
            ENV_NAMES["ib_port"]: str(ib.port),
            ENV_NAMES["ib_client_id"]: str(ib.client_id),
            ENV_NAMES["ib_account"]: ib.account,
            ENV_NAMES["max_lines"]: str(ib.max_lines),
            ENV_NAMES["reserved_lines"]: str(ib.reserved_lines),
            ENV_NAMES["stream_sec_types"]: ib.stream_sec_types,
            ENV_NAMES["flush_interval_s"]: ib.flush_interval_s,
            ENV_NAMES["valuation_interval_s"]: ib.valuation_interval_s,
            ENV_NAMES["stream_buffer_cap"]: str(ib.stream_buffer_cap),
            ENV_NAMES["rotation_lines"]: str(ib.rotation_lines),
            ENV_NAMES["history_retention_days"]: str(lake.history_retention_days),
        }
    )


def resources_from_settings(
    settings: Settings,
    supervision: StreamSupervision | None = None,
    thresholds: HealthThresholds | None = None,
) -> dict[str, dg.ConfigurableResource]:
    from_env = _EnvBacked(settings)
    secret_keys = credential_keys(settings.lake_storage_options)
    if secret_keys and not from_env._backed("lake_storage_options"):
        # A literal config value is kept in Dagster's snapshots and shown in the UI; an EnvVar is not.
        raise ConfigError(
            f"{ENV_NAMES['lake_storage_options']}: storage options with credentials "
            f"({', '.join(secret_keys)}) must come from that environment variable, not be given as values"
        )
    return {
        "lake": LakeResource(
            root_uri=from_env.text("lake_uri", settings.lake_uri),
            storage_options_json=from_env.text(
                "lake_storage_options", json.dumps(settings.lake_storage_options)
            ),
            history_retention_days=from_env.integer(
                "history_retention_days", settings.history_retention_days
            ),
        ),
        "ib": IBResource(
            host=from_env.text("ib_host", settings.ib_host),
            port=from_env.integer("ib_port", settings.ib_port),
            client_id=from_env.integer("ib_client_id", settings.ib_client_id),
            account=from_env.text("ib_account", settings.ib_account),
            max_lines=from_env.integer("max_lines", settings.max_lines),
            reserved_lines=from_env.integer("reserved_lines", settings.reserved_lines),
            stream_sec_types=from_env.text("stream_sec_types", ",".join(settings.stream_sec_types)),
            flush_interval_s=from_env.text("flush_interval_s", repr(settings.flush_interval_s)),
            valuation_interval_s=from_env.text("valuation_interval_s", repr(settings.valuation_interval_s)),
            stream_buffer_cap=from_env.integer("stream_buffer_cap", settings.stream_buffer_cap),
            rotation_lines=from_env.integer("rotation_lines", settings.rotation_lines),
        ),
        "supervision": supervision or StreamSupervision(),
        "thresholds": thresholds or HealthThresholds(),
    }


class _EnvBacked:
    """Chooses, per setting, between the value and the `EnvVar` it came from.

    A setting is env-backed when its variable is set here and parses to the value `settings` holds (so the
    settings came from the environment, not from a flag or a test); then the run resolves the variable in
    its own environment. The value is never echoed: storage options carry credentials."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        try:
            self._env = Settings.from_env()
        except ConfigError:
            self._env = None  # a bad environment: explicit settings are all we have

    def _backed(self, field_name: str) -> bool:
        name = ENV_NAMES[field_name]
        if self._env is None or not os.environ.get(name, "").strip():
            return False
        return getattr(self._env, field_name) == getattr(self._settings, field_name)

    def text(self, field_name: str, value: str) -> str:
        return dg.EnvVar(ENV_NAMES[field_name]) if self._backed(field_name) else value

    def integer(self, field_name: str, value: int) -> int:
        return dg.EnvVar.int(ENV_NAMES[field_name]) if self._backed(field_name) else value
