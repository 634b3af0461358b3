"""Settings from the environment, read in exactly one place.

Every other module receives a `Settings` (or the fields it needs); nothing else reads `os.environ`.
`Settings` is a pydantic dataclass: pydantic parses each field and applies its rule whenever one is built
(from the environment, from flags, or in code). A bad value from the environment or a flag stops start-up
with a `ConfigError` that names the variable (or flag) and the value.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ConfigDict, ValidationError, model_validator
from pydantic.dataclasses import dataclass


class ConfigError(ValueError):
    """A configuration variable holds a value we cannot use."""


@dataclasses.dataclass(slots=True, frozen=True)
class LineBudget:
    """How many streaming lines this process may hold: IB's per-account limit minus the lines kept free for
    other clients (TWS, mobile, other bots). `Settings.budget` builds a process's one budget from
    V6_MAX_LINES / V6_RESERVED_LINES; nothing else subtracts the reserve again."""

    max_lines: int = 100
    reserved: int = 0

    def __post_init__(self) -> None:
        if self.max_lines <= 0:
            raise ValueError(f"max_lines={self.max_lines!r}: must be > 0")
        if not 0 <= self.reserved < self.max_lines:
            raise ValueError(f"reserved={self.reserved!r}: must be >= 0 and below max_lines={self.max_lines}")

    @property
    def available(self) -> int:
        return self.max_lines - self.reserved


class _Refused(ValueError):
    """A value a rule refuses: `shown` is printed unless `hidden` (credentials); `field` names the field
    a rule across fields blames."""

    def __init__(self, why: str, shown: object = None, *, field: str | None = None, hidden: bool = False):
        super().__init__(why)
        self.why, self.shown, self.field, self.hidden = why, shown, field, hidden


def _rule(check: Callable[[Any], bool], why: str) -> AfterValidator:
    """A rule on the parsed value; the error shows the parsed value (`V6_IB_PORT=70000`)."""

    def apply(value: Any) -> Any:
        if not check(value):
            raise _Refused(why, value)
        return value

    return AfterValidator(apply)


def _storage_options(value: object) -> object:
    """V6_LAKE_STORAGE_OPTIONS as JSON text or a mapping. Never echoes the value: it carries credentials."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise _Refused(f"malformed JSON ({exc.msg} at position {exc.pos})", hidden=True) from None
    if not isinstance(value, Mapping):
        raise _Refused(f"must be a JSON object, got {type(value).__name__}", hidden=True)
    return {str(key): str(item) for key, item in value.items()}


def _sec_types(value: object) -> object:
    """`opt, fop` (a variable) or an iterable (a flag, code) -> ("OPT", "FOP")."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, Iterable):
        raise _Refused("must list sec types, e.g. OPT or OPT,FOP", value)
    types = tuple(str(part).strip().upper() for part in value if str(part).strip())
    if not types:
        raise _Refused("must list at least one sec type, e.g. OPT or OPT,FOP", ",".join(map(str, value)))
    return types


# The rules, one per meaning; each names what the user must change.
_NotEmpty = _rule(lambda text: bool(text.strip()), "must not be empty")
_Positive = _rule(lambda number: number > 0, "must be > 0")
_NotNegative = _rule(lambda number: number >= 0, "must be >= 0")
_Seconds = _rule(lambda number: number > 0, "must be > 0 seconds")
_Port = _rule(lambda port: 0 < port < 65536, "must be a TCP port between 1 and 65535")
_Cron = _rule(
    lambda cron: len(cron.split()) == 5, "must be a cron expression of five fields, e.g. '* * * * *'"
)
_RetentionDays = _rule(lambda days: days >= 0, "must be >= 0 (0 keeps all history)")
_RotationLines = _rule(lambda lines: lines >= 0, "must be >= 0 (0 queues legs that do not fit)")
_BufferCap = _rule(lambda cap: cap >= 1, "must be >= 1 contract")
_Rate = _rule(lambda rate: -0.1 <= rate <= 0.5, "must be a yearly fraction in [-0.1, 0.5], e.g. 0.04")


@dataclass(slots=True, frozen=True, config=ConfigDict(allow_inf_nan=False))
class Settings:
    """Every setting of the project; each field comes from the `V6_*` variable ENV_NAMES gives it."""

    lake_uri: Annotated[str, _NotEmpty] = "./data/lake"
    lake_storage_options: Annotated[dict[str, str], BeforeValidator(_storage_options)] = dataclasses.field(
        default_factory=dict, repr=False  # credentials
    )
    ib_host: Annotated[str, _NotEmpty] = "127.0.0.1"
    ib_port: Annotated[int, _Port] = 4002
    ib_client_id: Annotated[int, _NotNegative] = 10
    ib_account: str = ""
    max_lines: Annotated[int, _Positive] = 100
    reserved_lines: Annotated[int, _NotNegative] = 0
    stream_sec_types: Annotated[tuple[str, ...], BeforeValidator(_sec_types)] = ("OPT",)
    flush_interval_s: Annotated[float, _Seconds] = 1.0
    batch_cron: Annotated[str, _Cron] = "* * * * *"
    # When the book is reconciled against IB's position list (zero lines); also at every stream connect.
    reconcile_cron: Annotated[str, _Cron] = "*/5 * * * *"
    # Days of history kept before today; 0 keeps everything.
    history_retention_days: Annotated[int, _RetentionDays] = 0
    # Contracts the stream holds while the lake is unreachable.
    stream_buffer_cap: Annotated[int, _BufferCap] = 100_000
    # Queued holdings are re-valued (zero-line reqPnLSingle) this often.
    valuation_interval_s: Annotated[float, _Seconds] = 60.0
    # Lines that rotate through active legs that do not fit; 0 = queue them only.
    rotation_lines: Annotated[int, _RotationLines] = 10
    # Continuously compounded yearly rate of the model greeks of queued options (risk/model_greeks.py).
    risk_free_rate: Annotated[float, _Rate] = 0.04

    @model_validator(mode="after")
    def _reserve_below_limit(self) -> Settings:
        if self.reserved_lines >= self.max_lines:
            raise _Refused(
                f"must be below the line limit {self.max_lines}", self.reserved_lines, field="reserved_lines"
            )
        return self

    @property
    def budget(self) -> LineBudget:
        """The streaming line budget: the one place it is computed (IB's limit minus other clients' lines)."""
        return LineBudget(max_lines=self.max_lines, reserved=self.reserved_lines)

    @property
    def line_budget(self) -> int:
        """Lines this project may use: the account's limit minus what other clients keep."""
        return self.budget.available

    @property
    def gateway(self) -> str:
        """host:port, the key of "one stream per gateway"."""
        return f"{self.ib_host}:{self.ib_port}"

    def with_overrides(self, **overrides: object) -> Settings:
        """Command-line flags win over the environment; `None` means "flag not given"."""
        given = {name: value for name, value in overrides.items() if value is not None}
        return _validated(lambda: dataclasses.replace(self, **given), source="flag")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from `V6_*` variables (`environ`, default `os.environ`); an unset or blank one keeps
        its default."""
        given = env_texts(environ)
        return _validated(lambda: cls(**given), source="env")

    def env_text(self, field_name: str) -> str:
        """The text of this field as its `V6_*` variable would hold it (`from_env` reads it back equal)."""
        value = getattr(self, field_name)
        if isinstance(value, tuple):
            return ",".join(value)
        if isinstance(value, dict):
            return json.dumps(value)
        return repr(value) if isinstance(value, float) else str(value)


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
    "reconcile_cron": "V6_RECONCILE_CRON",
    "history_retention_days": "V6_HISTORY_RETENTION_DAYS",
    "stream_buffer_cap": "V6_STREAM_BUFFER_CAP",
    "valuation_interval_s": "V6_VALUATION_INTERVAL_S",
    "rotation_lines": "V6_ROTATION_LINES",
    "risk_free_rate": "V6_RISK_FREE_RATE",
}

def env_texts(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """field -> the text of its `V6_*` variable, for the variables set (not blank) in `environ`
    (default `os.environ`)."""
    env = os.environ if environ is None else environ
    raw = {field: env.get(name, "").strip() for field, name in ENV_NAMES.items()}
    return {field: text for field, text in raw.items() if text}


# pydantic's parse failures, said the way a user reads them.
_PARSE_FAILURES = {
    "int_parsing": "not an integer",
    "int_from_float": "not an integer",
    "int_type": "not an integer",
    "float_parsing": "not a number",
    "float_type": "not a number",
    "finite_number": "not a number",
}


def _validated(build: Callable[[], Settings], source: str) -> Settings:
    """Run `build`; turn pydantic's first error into a ConfigError naming the variable or flag."""
    try:
        return build()
    except ValidationError as exc:
        raise _config_error(exc.errors()[0], source) from None


def _config_error(error: Any, source: str) -> ConfigError:
    refused = (error.get("ctx") or {}).get("error")
    field = refused.field if isinstance(refused, _Refused) and refused.field else str(error["loc"][0])
    name = ENV_NAMES[field] if source == "env" else f"--{field.replace('_', '-')}"
    if isinstance(refused, _Refused):
        if refused.hidden:
            return ConfigError(f"{name}: {refused.why}")
        return ConfigError(f"{name}={refused.shown!r}: {refused.why}")
    why = _PARSE_FAILURES.get(error["type"], error["msg"])
    shown = "" if field == "lake_storage_options" else f"={error['input']!r}"  # never echo credentials
    return ConfigError(f"{name}{shown}: {why}")


# Parts of storage-option keys (deltalake / object_store names, any case) whose values are credentials.
_CREDENTIAL_MARKERS = ("SECRET", "TOKEN", "PASSWORD", "ACCESS_KEY", "ACCOUNT_KEY", "SAS", "SERVICE_ACCOUNT")


def credential_keys(storage_options: Mapping[str, str]) -> list[str]:
    """The keys of `storage_options` that carry credentials (their values must never be shown)."""
    return sorted(k for k in storage_options if any(marker in k.upper() for marker in _CREDENTIAL_MARKERS))
