"""Dagster resources: where the lake is, which gateway to talk to, how the stream run is supervised.

Values come from `v6_positions.config.Settings` (the one place that reads the environment);
`resources_from_settings` turns a `Settings` into the resource dict `definitions.py` assembles.
"""

from __future__ import annotations

import json

import dagster as dg

from v6_positions.config import ENV_NAMES, Settings

# The stream owns `client_id`; the batch path's zero-line requests use the next id so both can be connected
# at once (IB rejects a second session on a clientId that is in use).
BATCH_CLIENT_ID_OFFSET = 1


class LakeResource(dg.ConfigurableResource):
    """Root of the Delta tables. Assets write through `v6_positions.lake`, never through an IO manager."""

    root_uri: str
    storage_options_json: str = "{}"

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
    stream_sec_types: list[str] = ["OPT"]
    flush_interval_s: float = 1.0

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
    """The library layers take a `Settings`; rebuild one from the two resources."""
    return Settings(
        lake_uri=lake.root_uri,
        lake_storage_options=lake.storage_options or {},
        ib_host=ib.host,
        ib_port=ib.port,
        ib_client_id=ib.client_id,
        ib_account=ib.account,
        max_lines=ib.max_lines,
        reserved_lines=ib.reserved_lines,
        stream_sec_types=tuple(ib.stream_sec_types),
        flush_interval_s=ib.flush_interval_s,
    )


def resources_from_settings(
    settings: Settings,
    supervision: StreamSupervision | None = None,
    thresholds: HealthThresholds | None = None,
) -> dict[str, dg.ConfigurableResource]:
    return {
        "lake": LakeResource(
            root_uri=settings.lake_uri, storage_options_json=_storage_options_config(settings)
        ),
        "ib": IBResource(
            host=settings.ib_host,
            port=settings.ib_port,
            client_id=settings.ib_client_id,
            account=settings.ib_account,
            max_lines=settings.max_lines,
            reserved_lines=settings.reserved_lines,
            stream_sec_types=list(settings.stream_sec_types),
            flush_interval_s=settings.flush_interval_s,
        ),
        "supervision": supervision or StreamSupervision(),
        "thresholds": thresholds or HealthThresholds(),
    }


def _storage_options_config(settings: Settings) -> str:
    """Storage options often carry credentials: when they came from the environment, pass the variable's name
    (EnvVar) so the values never enter Dagster's config snapshot and the UI."""
    if not settings.lake_storage_options:
        return "{}"
    env_var = dg.EnvVar(ENV_NAMES["lake_storage_options"])
    if env_var.get_value():
        return env_var
    return json.dumps(settings.lake_storage_options)
