"""Settings from the environment, read in exactly one place.

Every other module receives a `Settings` (or the fields it needs); nothing else reads `os.environ`.
A bad value stops start-up with a `ConfigError` that names the variable and the value.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A configuration variable holds a value we cannot use."""


@dataclass(slots=True, frozen=True)
class Settings:
    lake_uri: str = "./data/lake"
    lake_storage_options: dict[str, str] = field(default_factory=dict, repr=False)  # credentials
    ib_host: str = "127.0.0.1"
    ib_port: int = 4002
    ib_client_id: int = 10
    ib_account: str = ""
    max_lines: int = 100
    reserved_lines: int = 0
    stream_sec_types: tuple[str, ...] = ("OPT",)
    flush_interval_s: float = 1.0
    batch_cron: str = "* * * * *"
    history_retention_days: int = 0  # days of history kept before today; 0 keeps everything
    stream_buffer_cap: int = 100_000  # contracts the stream holds while the lake is unreachable
    valuation_interval_s: float = 60.0  # queued holdings are re-valued (zero-line reqPnLSingle) this often
    rotation_lines: int = 10  # lines that rotate through active legs that do not fit; 0 = queue them only

    @property
    def line_budget(self) -> int:
        """Lines this project may use: the account's limit minus what other clients keep."""
        return self.max_lines - self.reserved_lines

    def with_overrides(self, **overrides: object) -> Settings:
        """Command-line flags win over the environment; `None` means "flag not given"."""
        given = {name: value for name, value in overrides.items() if value is not None}
        updated = dataclasses.replace(self, **given)
        _validate(updated, source="flag")
        return updated

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()
        settings = cls(
            lake_uri=_text(env, "V6_LAKE_URI", defaults.lake_uri),
            lake_storage_options=_json_object(env, "V6_LAKE_STORAGE_OPTIONS"),
            ib_host=_text(env, "V6_IB_HOST", defaults.ib_host),
            ib_port=_integer(env, "V6_IB_PORT", defaults.ib_port),
            ib_client_id=_integer(env, "V6_IB_CLIENT_ID", defaults.ib_client_id),
            ib_account=env.get("V6_IB_ACCOUNT", defaults.ib_account).strip(),
            max_lines=_integer(env, "V6_MAX_LINES", defaults.max_lines),
            reserved_lines=_integer(env, "V6_RESERVED_LINES", defaults.reserved_lines),
            stream_sec_types=_sec_types(env, "V6_STREAM_SEC_TYPES", defaults.stream_sec_types),
            flush_interval_s=_number(env, "V6_FLUSH_INTERVAL_S", defaults.flush_interval_s),
            batch_cron=_text(env, "V6_BATCH_CRON", defaults.batch_cron),
            history_retention_days=_integer(
                env, "V6_HISTORY_RETENTION_DAYS", defaults.history_retention_days
            ),
            stream_buffer_cap=_integer(env, "V6_STREAM_BUFFER_CAP", defaults.stream_buffer_cap),
            valuation_interval_s=_number(env, "V6_VALUATION_INTERVAL_S", defaults.valuation_interval_s),
            rotation_lines=_integer(env, "V6_ROTATION_LINES", defaults.rotation_lines),
        )
        _validate(settings, source="env")
        return settings


# Which environment variable each field comes from, so errors name what the user can change.
ENV_NAMES = {
    "lake_uri": "V6_LAKE_URI",
    "lake_storage_options": "V6_LAKE_STORAGE_OPTIONS",
    "ib_host": "V6_IB_HOST",
    "ib_port": "V6_IB_PORT",
    "ib_client_id": "V6_IB_CLIENT_ID",
    "ib_account": "V6_IB_ACCOUNT",
    "max_lines": "V6_MAX_LINES",
    "reserved_lines": "V6_RESERVED_LINES",
    "stream_sec_types": "V6_STREAM_SEC_TYPES",
    "flush_interval_s": "V6_FLUSH_INTERVAL_S",
    "batch_cron": "V6_BATCH_CRON",
    "history_retention_days": "V6_HISTORY_RETENTION_DAYS",
    "stream_buffer_cap": "V6_STREAM_BUFFER_CAP",
    "valuation_interval_s": "V6_VALUATION_INTERVAL_S",
    "rotation_lines": "V6_ROTATION_LINES",
}


def _validate(settings: Settings, source: str) -> None:
    def fail(field_name: str, value: object, why: str) -> None:
        name = ENV_NAMES[field_name] if source == "env" else f"--{field_name.replace('_', '-')}"
        raise ConfigError(f"{name}={value!r}: {why}")

    if not settings.lake_uri.strip():
        fail("lake_uri", settings.lake_uri, "must not be empty")
    if not settings.ib_host.strip():
        fail("ib_host", settings.ib_host, "must not be empty")
    if not 0 < settings.ib_port < 65536:
        fail("ib_port", settings.ib_port, "must be a TCP port between 1 and 65535")
    if settings.ib_client_id < 0:
        fail("ib_client_id", settings.ib_client_id, "must be >= 0")
    if settings.max_lines <= 0:
        fail("max_lines", settings.max_lines, "must be > 0")
    if settings.reserved_lines < 0:
        fail("reserved_lines", settings.reserved_lines, "must be >= 0")
    if settings.reserved_lines >= settings.max_lines:
        fail("reserved_lines", settings.reserved_lines, f"must be below the line limit {settings.max_lines}")
    if not settings.stream_sec_types:
        fail("stream_sec_types", settings.stream_sec_types, "must name at least one sec type")
    if not settings.flush_interval_s > 0:
        fail("flush_interval_s", settings.flush_interval_s, "must be > 0 seconds")
    if not settings.valuation_interval_s > 0:
        fail("valuation_interval_s", settings.valuation_interval_s, "must be > 0 seconds")
    if len(settings.batch_cron.split()) != 5:
        fail("batch_cron", settings.batch_cron, "must be a cron expression of five fields, e.g. '* * * * *'")
    if settings.history_retention_days < 0:
        fail("history_retention_days", settings.history_retention_days, "must be >= 0 (0 keeps all history)")
    if settings.rotation_lines < 0:
        fail("rotation_lines", settings.rotation_lines, "must be >= 0 (0 queues legs that do not fit)")
    if settings.stream_buffer_cap < 1:
        fail("stream_buffer_cap", settings.stream_buffer_cap, "must be >= 1 contract")


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _integer(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: not an integer") from None


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: not a number") from None
    if value != value:  # NaN
        raise ConfigError(f"{name}={raw!r}: not a number")
    return value


# Parts of storage-option keys (deltalake / object_store names, any case) whose values are credentials.
_CREDENTIAL_MARKERS = ("SECRET", "TOKEN", "PASSWORD", "ACCESS_KEY", "ACCOUNT_KEY", "SAS", "SERVICE_ACCOUNT")


def credential_keys(storage_options: Mapping[str, str]) -> list[str]:
    """The keys of `storage_options` that carry credentials (their values must never be shown)."""
    return sorted(k for k in storage_options if any(marker in k.upper() for marker in _CREDENTIAL_MARKERS))


def _json_object(env: Mapping[str, str], name: str) -> dict[str, str]:
    raw = env.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name}: malformed JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: must be a JSON object, got {type(value).__name__}")
    # Values are not echoed: storage options often carry credentials.
    return {str(key): str(item) for key, item in value.items()}


def _sec_types(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    types = tuple(part.strip().upper() for part in raw.split(",") if part.strip())
    if not types:
        raise ConfigError(f"{name}={raw!r}: must list at least one sec type, e.g. OPT or OPT,FOP")
    return types
