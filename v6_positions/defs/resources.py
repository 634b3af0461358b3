"""Dagster resources: where the lake is, which gateway to talk to, how the stream run is supervised.

Values come from `v6_positions.config.Settings` (the one place that parses the environment);
`resources_from_settings` turns a `Settings` into the resource dict `definitions.py` assembles, and
`settings_of(lake, ib)` turns the resources back into the one `Settings` a run uses.

Settings read where runs execute: `LakeResource` and `IBResource` hold `Settings` fields under the same
names, each as the text its `V6_*` variable holds. A setting that came from a `V6_*` variable is passed as
`EnvVar` (`{"env": "V6_..."}` in the config), so Dagster resolves it in the process that runs the step (a run
container's own environment), and the value (storage credentials included) never enters the config snapshot
or the UI. A setting given explicitly (tests, command-line flags) is passed as its text. Either way
`Settings.from_env` parses and validates it where it is used: a bad value names its variable.
"""

from __future__ import annotations

from typing import TypeVar

import dagster as dg

from v6_positions.config import ENV_NAMES, ConfigError, Settings, credential_keys, env_texts
from v6_positions.ib.connection.client_ids import helper_client_ids


class _SettingsPart(dg.ConfigurableResource):
    """Some `Settings` fields, named as in `Settings`, each the text of its `V6_*` variable."""

    def variables(self) -> dict[str, str]:
        """The `V6_*` variables this resource holds, as an environment for `Settings.from_env`."""
        return {ENV_NAMES[name]: getattr(self, name) for name in type(self).model_fields}

    @property
    def settings(self) -> Settings:
        """This resource's fields parsed and validated (fields of other resources keep their defaults);
        use `settings_of(lake, ib)` for a run's whole `Settings`."""
        return Settings.from_env(self.variables())


_Part = TypeVar("_Part", bound=_SettingsPart)


class LakeResource(_SettingsPart):
    """Root of the Delta tables. Assets write through `v6_positions.lake`, never through an IO manager."""

    lake_uri: str
    lake_storage_options: str
    history_retention_days: str
    risk_free_rate: str  # the risk refresh's model greeks (it reads the lake, never IB)

    @property
    def root_uri(self) -> str:
        return self.settings.lake_uri

    @property
    def storage_options(self) -> dict[str, str] | None:
        return self.settings.lake_storage_options or None


class IBResource(_SettingsPart):
    """The IB Gateway/TWS socket and the line budget. Every connection is read-only; there is no switch."""

    ib_host: str
    ib_port: str
    ib_client_id: str
    ib_account: str
    max_lines: str
    reserved_lines: str
    stream_sec_types: str
    flush_interval_s: str
    valuation_interval_s: str
    stream_buffer_cap: str
    rotation_lines: str

    @property
    def gateway(self) -> str:
        """The value of the stream run's concurrency tag: one stream per gateway."""
        return self.settings.gateway

    @property
    def line_budget(self) -> int:
        return self.settings.line_budget

    @property
    def batch_client_id(self) -> int:
        """The batch path's zero-line requests use the first helper id, so the stream and a batch run can be
        connected at once (IB rejects a second session on a clientId that is in use)."""
        return helper_client_ids(self.settings)[0]

    @property
    def reconcile_client_id(self) -> int:
        """Reconciliation reads IB's position list on the next helper id (a batch may be connected)."""
        return helper_client_ids(self.settings)[1]


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
    """The one `Settings` of a run, from its two resources (parsed and validated as the environment is: a
    bad value raises `ConfigError` naming its V6_* variable). `batch_cron` is not carried: it shapes the
    schedule where the code location loads, it is not a run's setting."""
    return Settings.from_env({**lake.variables(), **ib.variables()})


def resources_from_settings(
    settings: Settings,
    supervision: StreamSupervision | None = None,
    thresholds: HealthThresholds | None = None,
) -> dict[str, dg.ConfigurableResource]:
    from_env = _EnvBacked(settings)
    secret_keys = credential_keys(settings.lake_storage_options)
    if secret_keys and not from_env.backed("lake_storage_options"):
        # A literal config value is kept in Dagster's snapshots and shown in the UI; an EnvVar is not.
        raise ConfigError(
            f"{ENV_NAMES['lake_storage_options']}: storage options with credentials "
            f"({', '.join(secret_keys)}) must come from that environment variable, not be given as values"
        )
    return {
        "lake": from_env.part(LakeResource),
        "ib": from_env.part(IBResource),
        "supervision": supervision or StreamSupervision(),
        "thresholds": thresholds or HealthThresholds(),
    }


class _EnvBacked:
    """Chooses, per setting, between its text and the `EnvVar` it came from.

    A setting is env-backed when its variable is set here and parses to the value `settings` holds (so the
    settings came from the environment, not from a flag or a test); then the run resolves the variable in
    its own environment. The value is never echoed: storage options carry credentials."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._set = env_texts()
        try:
            self._env = Settings.from_env()
        except ConfigError:
            self._env = None  # a bad environment: explicit settings are all we have

    def backed(self, field_name: str) -> bool:
        if self._env is None or field_name not in self._set:
            return False
        return getattr(self._env, field_name) == getattr(self._settings, field_name)

    def part(self, resource: type[_Part]) -> _Part:
        """`resource` with each of its fields set from `settings`, by name."""
        return resource(
            **{
                name: dg.EnvVar(ENV_NAMES[name]) if self.backed(name) else self._settings.env_text(name)
                for name in resource.model_fields
            }
        )
