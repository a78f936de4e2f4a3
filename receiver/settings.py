"""Settings: environment variables over an optional YAML file; fails fast naming the variable.

Precedence (CONTRACT §3): explicit keyword arguments (tests) > environment > the YAML file named
by ``RECEIVER_CONFIG_FILE`` (``${VAR}`` replaced from the environment) > defaults. YAML keys may be
spelled as the environment variable (``RECEIVER_POLL_AFTER_SECONDS``) or as the field name
(``poll_after_seconds``); the handler list is ``handlers:``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

ANALYSIS_COMPONENTS = ("summary", "sentiment", "compliance", "keywords", "performance")
DEFAULT_API_URL = "https://api.kallglot.com/v1"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """A setting is wrong or missing; the message is one line that names it."""


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
    kallglot_webhook_secrets: Annotated[list[SecretStr], NoDecode] = _env(
        "KALLGLOT_WEBHOOK_SECRETS", "kallglot_webhook_secrets", [], validate_default=True
    )
    kallglot_timeout_seconds: float = _env("KALLGLOT_TIMEOUT_SECONDS", "kallglot_timeout_seconds", 10.0, gt=0)
    database_url: SecretStr = _env(
        "RECEIVER_DATABASE_URL", "database_url", SecretStr("sqlite:///./data/receiver.db")
    )
    config_file: Path | None = _env("RECEIVER_CONFIG_FILE", "config_file")
    handlers: list[dict[str, Any]] = _env("RECEIVER_HANDLERS", "handlers", [])
    inbound_secrets: Annotated[list[SecretStr], NoDecode] = _env(
        "RECEIVER_INBOUND_SECRETS", "inbound_secrets", []
    )
    admin_token: SecretStr | None = _env("RECEIVER_ADMIN_TOKEN", "admin_token")
    analysis_profile: str = _env(
        "RECEIVER_ANALYSIS_PROFILE", "analysis_profile", "default", min_length=1, max_length=100
    )
    analysis_include: Annotated[list[str], NoDecode] = _env(
        "RECEIVER_ANALYSIS_INCLUDE", "analysis_include", list(ANALYSIS_COMPONENTS)
    )
    trigger: Literal["session.ended", "transcript.ready"] = _env(
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
    # --- listeners (CONTRACT §9): public webhooks and admin on separate ports; slow-client guards
    port: int = _env("RECEIVER_PORT", "port", 8080, ge=0, le=65535)
    admin_port: int = _env("RECEIVER_ADMIN_PORT", "admin_port", 9090, ge=0, le=65535)
    admin_host: str | None = _env("RECEIVER_ADMIN_HOST", "admin_host", None, min_length=1)
    body_timeout_seconds: float = _env("RECEIVER_BODY_TIMEOUT_SECONDS", "body_timeout_seconds", 10.0, gt=0)
    max_connections: int = _env("RECEIVER_MAX_CONNECTIONS", "max_connections", 1000, ge=1)

    @field_validator("kallglot_webhook_secrets", "inbound_secrets", "analysis_include", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split_commas(value)

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

    @field_validator("inbound_secrets")
    @classmethod
    def _whsec(cls, value: list[SecretStr]) -> list[SecretStr]:
        from receiver.signing import standard_webhooks_key

        for secret in value:
            standard_webhooks_key(secret.get_secret_value())
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlFileSource(settings_cls))

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
            out[env_name(name, info)] = _mask(value)
        out["RECEIVER_HANDLERS"] = [_mask_handler(h) for h in self.handlers]
        return out


_SECRET_KEYS = re.compile(r"(token|secret|password|key|dsn|credential|webhook_url)$", re.IGNORECASE)
_NOT_SECRET = {"key", "kms_key_id"}


def _mask(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "***"
    if isinstance(value, list):
        return [_mask(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _mask_handler(handler: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in handler.items():
        if key == "headers" and isinstance(value, dict):
            out[key] = {name: "***" for name in value}
        elif key not in _NOT_SECRET and _SECRET_KEYS.search(key) and value:
            out[key] = "***"
        else:
            out[key] = value
    return out


def env_name(field_name: str, info: FieldInfo | None = None) -> str:
    """The environment variable of a field (what error messages and check-config show)."""
    info = info or Settings.model_fields.get(field_name)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        if isinstance(first, str):
            return first
    return field_name


def _aliases() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, info in Settings.model_fields.items():
        out[name.lower()] = name
        out[env_name(name, info).lower()] = name
    return out


def substitute_env(text: str, environ: dict[str, str] | os._Environ[str]) -> str:
    """Replace ``${VAR}`` with the variable's value; an unset variable is an error."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise ConfigError(f"RECEIVER_CONFIG_FILE refers to ${{{name}}}, which is not set")
        return environ[name]

    return _VAR.sub(repl, text)


class YamlFileSource(PydanticBaseSettingsSource):
    """The YAML file named by RECEIVER_CONFIG_FILE, lowest priority above the defaults."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("RECEIVER_CONFIG_FILE")
        if not path:
            return {}
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"invalid setting RECEIVER_CONFIG_FILE: cannot read {path}: {exc.strerror}"
            ) from None
        try:
            data = yaml.safe_load(substitute_env(text, os.environ))
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"invalid setting RECEIVER_CONFIG_FILE: {path} is not valid YAML ({exc})"
            ) from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(f"invalid setting RECEIVER_CONFIG_FILE: {path} must hold a mapping")
        aliases = _aliases()
        out: dict[str, Any] = {}
        for key, value in data.items():
            name = aliases.get(str(key).lower())
            if name is None:
                raise ConfigError(f"invalid setting RECEIVER_CONFIG_FILE: unknown key {key!r} in {path}")
            out[name] = value
        return out


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; raise ConfigError with one line naming the first bad setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(part) for part in error["loc"]]
        field = _aliases().get(loc[0].lower(), loc[0]) if loc else "?"
        where = env_name(field) + "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in loc[1:])
        raise ConfigError(f"invalid setting {where}: {error['msg']}") from None
    except SettingsError as exc:
        match = re.search(r'field "(\w+)"', str(exc))
        name = env_name(match.group(1)) if match else "?"
        raise ConfigError(f"invalid setting {name}: not valid JSON") from None
