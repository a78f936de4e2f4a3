"""Settings: environment variables over an optional YAML file; fails fast naming the variable.

Precedence (CONTRACT §3): explicit keyword arguments (tests) > environment > the YAML file named
by ``RECEIVER_CONFIG_FILE`` (``${VAR}`` replaced from the environment) > defaults. YAML keys may be
spelled as the environment variable (``RECEIVER_POLL_AFTER_SECONDS``) or as the field name
(``poll_after_seconds``); the handler list is ``handlers:``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from receiver.secret_settings import SigningSecret, StandardWebhooksSecret
from receiver.settings_masking import mask, mask_handler
from receiver.settings_sources import (
    ConfigError,
    SecretFiles,
    YamlFileSource,
    aliases,
    field_env_name,
)

__all__ = ["ANALYSIS_COMPONENTS", "ConfigError", "Settings", "env_name", "load_settings"]

ANALYSIS_COMPONENTS = ("summary", "sentiment", "compliance", "keywords", "performance")
DEFAULT_API_URL = "https://api.kallglot.com/v1"


def _env(name: str, field_name: str, default: Any = None, **kwargs: Any) -> Any:
    return Field(default, validation_alias=AliasChoices(name, field_name), **kwargs)


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every setting of CONTRACT §3, plus operational ones documented in the README."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    kallglot_api_url: str = _env("KALLGLOT_API_URL", "kallglot_api_url", DEFAULT_API_URL)
    kallglot_api_key: SecretStr | None = _env("KALLGLOT_API_KEY", "kallglot_api_key")
    kallglot_webhook_secrets: Annotated[list[SigningSecret], NoDecode] = _env(
        "KALLGLOT_WEBHOOK_SECRETS", "kallglot_webhook_secrets", [], validate_default=True
    )
    kallglot_timeout_seconds: float = _env("KALLGLOT_TIMEOUT_SECONDS", "kallglot_timeout_seconds", 10.0, gt=0)
    database_url: SecretStr = _env(
        "RECEIVER_DATABASE_URL", "database_url", SecretStr("sqlite:///./data/receiver.db")
    )
    config_file: Path | None = _env("RECEIVER_CONFIG_FILE", "config_file")
    handlers: list[dict[str, Any]] = _env("RECEIVER_HANDLERS", "handlers", [])
    inbound_secrets: Annotated[list[StandardWebhooksSecret], NoDecode] = _env(
        "RECEIVER_INBOUND_SECRETS", "inbound_secrets", []
    )
    admin_token: SigningSecret | None = _env("RECEIVER_ADMIN_TOKEN", "admin_token")
    analysis_profile: str = _env(
        "RECEIVER_ANALYSIS_PROFILE", "analysis_profile", "default", min_length=1, max_length=100
    )
    analysis_include: Annotated[list[str], NoDecode] = _env(
        "RECEIVER_ANALYSIS_INCLUDE", "analysis_include", list(ANALYSIS_COMPONENTS)
    )
    trigger: Literal["session.ended", "transcript.ready", "session.provider.disconnected"] = _env(
        "RECEIVER_TRIGGER", "trigger", "session.ended"
    )
    webhook_tolerance_seconds: int = _env(
        "RECEIVER_WEBHOOK_TOLERANCE_SECONDS", "webhook_tolerance_seconds", 300, gt=0
    )
    poll_after_seconds: float = _env("RECEIVER_POLL_AFTER_SECONDS", "poll_after_seconds", 30.0, gt=0)
    analysis_deadline_seconds: float = _env(
        "RECEIVER_ANALYSIS_DEADLINE_SECONDS", "analysis_deadline_seconds", 3600.0, gt=0
    )
    credit_reserve: int = _env("RECEIVER_CREDIT_RESERVE", "credit_reserve", 0, ge=0)
    min_duration_seconds: float = _env("RECEIVER_MIN_DURATION_SECONDS", "min_duration_seconds", 0.0, ge=0)
    max_body_bytes: int = _env("RECEIVER_MAX_BODY_BYTES", "max_body_bytes", 1_048_576, ge=1024)
    log_format: Literal["json", "text"] = _env("RECEIVER_LOG_FORMAT", "log_format", "json")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _env("RECEIVER_LOG_LEVEL", "log_level", "INFO")
    sentry_dsn: SecretStr | None = _env("SENTRY_DSN", "sentry_dsn")
    sentry_environment: str | None = _env("SENTRY_ENVIRONMENT", "sentry_environment")
    shutdown_grace_seconds: float = _env(
        "RECEIVER_SHUTDOWN_GRACE_SECONDS", "shutdown_grace_seconds", 20.0, ge=0
    )
    migrate_on_start: bool = _env("RECEIVER_MIGRATE_ON_START", "migrate_on_start", True)
    retention_days: float = _env("RECEIVER_RETENTION_DAYS", "retention_days", 30.0, gt=0)
    event_retention_hours: float = _env(
        "RECEIVER_EVENT_RETENTION_HOURS", "event_retention_hours", 48.0, ge=42
    )
    start_concurrency: int = _env("RECEIVER_START_CONCURRENCY", "start_concurrency", 8, ge=1, le=256)
    poll_concurrency: int = _env("RECEIVER_POLL_CONCURRENCY", "poll_concurrency", 8, ge=1, le=256)
    sandbox: bool = _env("RECEIVER_SANDBOX", "sandbox", False)
    # --- issue 8 (trust-state) ---
    #: Longest pause between probes of the start gate after a 402/403/401 (holes 12).
    start_probe_max_seconds: float = _env(
        "RECEIVER_START_PROBE_MAX_SECONDS", "start_probe_max_seconds", 30.0, gt=0, le=3600
    )
    #: How long sessions already analysed are remembered (hole 8); at least RECEIVER_RETENTION_DAYS.
    session_memory_days: float = _env("RECEIVER_SESSION_MEMORY_DAYS", "session_memory_days", 90.0, gt=0)
    # --- listeners (CONTRACT §9): public webhooks and admin on separate ports; slow-client guards
    port: int = _env("RECEIVER_PORT", "port", 8080, ge=0, le=65535)
    admin_port: int = _env("RECEIVER_ADMIN_PORT", "admin_port", 9090, ge=0, le=65535)
    admin_host: str | None = _env("RECEIVER_ADMIN_HOST", "admin_host", None, min_length=1)
    body_timeout_seconds: float = _env("RECEIVER_BODY_TIMEOUT_SECONDS", "body_timeout_seconds", 10.0, gt=0)
    max_connections: int = _env("RECEIVER_MAX_CONNECTIONS", "max_connections", 1000, ge=1)
    # --- perf (issue 9): this replica's part of the organisation's Kallglot rate limit; unset or
    # "auto": 1/N for the N replicas that count each other through the store ---
    kallglot_rate_share: float | None = _env(
        "RECEIVER_KALLGLOT_RATE_SHARE", "kallglot_rate_share", None, gt=0, le=1
    )

    # --- telephony presets (CONTRACT §9; docs/telephony.md) ---------------------------------
    public_url: str | None = _env("RECEIVER_PUBLIC_URL", "public_url")
    twilio_auth_token: SecretStr | None = _env("RECEIVER_TWILIO_AUTH_TOKEN", "twilio_auth_token")
    telnyx_public_key: str | None = _env("RECEIVER_TELNYX_PUBLIC_KEY", "telnyx_public_key")
    end_session: bool = _env("RECEIVER_END_SESSION", "end_session", False)
    twilio_end_session: bool | None = _env("RECEIVER_TWILIO_END_SESSION", "twilio_end_session")
    telnyx_end_session: bool | None = _env("RECEIVER_TELNYX_END_SESSION", "telnyx_end_session")
    call_settle_seconds: float = _env(
        "RECEIVER_CALL_SETTLE_SECONDS", "call_settle_seconds", 0.0, ge=0, le=86400
    )
    call_ended_mapping: Annotated[dict[str, str] | None, NoDecode] = _env(
        "RECEIVER_CALL_ENDED_MAPPING", "call_ended_mapping"
    )
    inbound_bearer_token: SecretStr | None = _env("RECEIVER_INBOUND_BEARER_TOKEN", "inbound_bearer_token")

    @field_validator("kallglot_rate_share", mode="before")
    @classmethod
    def _auto_share(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "auto"):
            return None
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
            raise ValueError(
                "must be the http(s) base URL the carrier calls, such as https://calls.example.com"
            )
        return value.rstrip("/") if value else value

    @field_validator("twilio_auth_token", "inbound_bearer_token")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip().encode()) < 16:
            raise ValueError("must be at least 16 bytes (an empty or short secret is refused)")
        return value

    @field_validator("telnyx_public_key")
    @classmethod
    def _telnyx_key(cls, value: str | None) -> str | None:
        if value is not None:
            from receiver.carriers.telnyx import public_key

            public_key(value)
        return value

    @field_validator("call_ended_mapping", mode="before")
    @classmethod
    def _mapping_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return yaml.safe_load(value)
            except yaml.YAMLError:
                raise ValueError("must be a JSON or YAML mapping of field -> JMESPath expression") from None
        return value

    @field_validator("call_ended_mapping")
    @classmethod
    def _mapping(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            from receiver.carriers.pbx import compile_mapping

            compile_mapping(value)
        return value

    # --- operators (admin API and console) ---
    admin_show_personal_data: bool = _env(
        "RECEIVER_ADMIN_SHOW_PERSONAL_DATA", "admin_show_personal_data", False
    )

    @field_validator("analysis_include", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("kallglot_webhook_secrets", "inbound_secrets", mode="before")
    @classmethod
    def _secret_list(cls, value: Any) -> Any:
        # Empty items are kept so that "real,,other" or ["real", "${UNSET_IN_CI}"] is an error
        # naming the item, not a list that silently lost a secret.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",")]
        return value

    @field_validator("analysis_include")
    @classmethod
    def _known_components(cls, value: list[str]) -> list[str]:
        unknown = [item for item in value if item not in ANALYSIS_COMPONENTS]
        if unknown:
            raise ValueError(f"unknown component(s) {unknown}; allowed: {', '.join(ANALYSIS_COMPONENTS)}")
        if not value:
            raise ValueError("name at least one component")
        return value

    @field_validator("kallglot_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s) URL such as https://api.kallglot.com/v1")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @field_validator("sentry_dsn")
    @classmethod
    def _sentry_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from sentry_sdk.utils import BadDsn, Dsn

            try:
                Dsn(value.get_secret_value())
            except BadDsn:
                raise ValueError("is not a Sentry DSN (https://<key>@<host>/<project>)") from None
        return value

    @model_validator(mode="after")
    def _memory_outlives_calls(self) -> Settings:
        if self.session_memory_days < self.retention_days:
            raise ConfigError(
                f"invalid setting RECEIVER_SESSION_MEMORY_DAYS: {self.session_memory_days:g} is shorter than"
                f" RECEIVER_RETENTION_DAYS={self.retention_days:g} (sessions must be remembered longer"
                " than their call rows)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            SecretFiles(settings_cls, env_name),
            YamlFileSource(settings_cls),
        )

    def require_production_secrets(self) -> None:
        """Outside the sandbox the API key and the webhook secrets are required."""
        if self.sandbox:
            return
        if self.kallglot_api_key is None:
            raise ConfigError("missing setting KALLGLOT_API_KEY (required unless serve --sandbox)")
        if not self.kallglot_webhook_secrets:
            raise ConfigError("missing setting KALLGLOT_WEBHOOK_SECRETS (required unless serve --sandbox)")

    def masked(self) -> dict[str, Any]:
        """The effective settings with every secret replaced by ``***`` (for check-config)."""
        out: dict[str, Any] = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            out[env_name(name, info)] = mask(value)
        out["RECEIVER_HANDLERS"] = [mask_handler(h) for h in self.handlers]
        return out


def env_name(field_name: str, info: FieldInfo | None = None) -> str:
    """The environment variable of a field (what error messages and check-config show)."""
    return field_env_name(field_name, info or Settings.model_fields.get(field_name))


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; raise ConfigError with one line naming the first bad setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(part) for part in error["loc"]]
        field = aliases(Settings).get(loc[0].lower(), loc[0]) if loc else "?"
        where = env_name(field) + "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in loc[1:])
        raise ConfigError(f"invalid setting {where}: {error['msg']}") from None
    except SettingsError as exc:
        match = re.search(r'field "(\w+)"', str(exc))
        name = env_name(match.group(1)) if match else "?"
        raise ConfigError(f"invalid setting {name}: not valid JSON") from None
