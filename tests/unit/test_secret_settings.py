"""Secrets (CONTRACT §9): empty or short keys stop start-up naming the setting; NAME_FILE for every secret."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from receiver.registry import parse_handlers
from receiver.secret_settings import SecretFileError, is_secret, secret_from_env
from receiver.settings import ConfigError, Settings, env_name, load_settings

LONG = "a-secret-of-24-bytes-key"
WHSEC_SHORT = "whsec_" + base64.b64encode(b"fifteen-bytes!!").decode()
WHSEC_LONG = "whsec_" + base64.b64encode(b"sixteen-bytes!!!").decode()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, info in Settings.model_fields.items():
        monkeypatch.delenv(env_name(name, info), raising=False)
        monkeypatch.delenv(env_name(name, info) + "_FILE", raising=False)


def _refused(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> str:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KALLGLOT_WEBHOOK_SECRETS": ""}, "KALLGLOT_WEBHOOK_SECRETS[0]: Value error, is empty"),
        (
            {"KALLGLOT_WEBHOOK_SECRETS": f"{LONG},,{LONG}"},
            "KALLGLOT_WEBHOOK_SECRETS[1]: Value error, is empty",
        ),
        ({"KALLGLOT_WEBHOOK_SECRETS": f"{LONG},short-secret"}, "KALLGLOT_WEBHOOK_SECRETS[1]"),
        ({"RECEIVER_INBOUND_SECRETS": "whsec_"}, "RECEIVER_INBOUND_SECRETS[0]: Value error, is empty"),
        ({"RECEIVER_INBOUND_SECRETS": WHSEC_SHORT}, "RECEIVER_INBOUND_SECRETS[0]"),
        ({"RECEIVER_ADMIN_TOKEN": ""}, "RECEIVER_ADMIN_TOKEN: Value error, is empty"),
        ({"RECEIVER_ADMIN_TOKEN": "fifteen-bytes!!"}, "RECEIVER_ADMIN_TOKEN"),
    ],
    ids=[
        "empty-list",
        "empty-item",
        "short-item",
        "empty-whsec",
        "short-whsec",
        "empty-token",
        "short-token",
    ],
)
def test_an_empty_or_short_secret_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    message = _refused(monkeypatch, env)
    assert named in message
    for value in env.values():
        for part in value.split(","):
            if len(part) > 6:
                assert part not in message


def test_sixteen_bytes_of_key_are_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIVER_INBOUND_SECRETS", WHSEC_LONG)
    monkeypatch.setenv("RECEIVER_ADMIN_TOKEN", "sixteen-bytes!!!")
    monkeypatch.setenv("KALLGLOT_WEBHOOK_SECRETS", "sixteen-bytes!!!")
    settings = load_settings()
    assert settings.admin_token is not None


def test_an_empty_yaml_list_item_from_an_empty_variable_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f'KALLGLOT_WEBHOOK_SECRETS: ["{LONG}", "${{SECOND}}"]\n')
    message = _refused(monkeypatch, {"RECEIVER_CONFIG_FILE": str(config), "SECOND": ""})
    assert "KALLGLOT_WEBHOOK_SECRETS[1]" in message


@pytest.mark.parametrize(
    ("secret", "fragment"),
    [("whsec_", "secret: is empty"), (WHSEC_SHORT, "secret: is shorter than 16 bytes")],
    ids=["empty", "short"],
)
def test_the_webhook_handler_secret_obeys_the_same_rule(secret: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_handlers([{"name": "out", "type": "webhook", "url": "https://example.com/x", "secret": secret}])
    assert "handlers[0] (out).secret" in str(caught.value)
    assert fragment in str(caught.value)


def _valid_value(field: str) -> str:
    """A value each secret field accepts (a field someone adds later gets a long token)."""
    return {
        "database_url": "sqlite:///./from-a-file.db",
        "sentry_dsn": "https://public@sentry.example.com/1",
        "inbound_secrets": WHSEC_LONG,
    }.get(field, LONG)


SECRET_FIELDS = [name for name, info in Settings.model_fields.items() if is_secret(info.annotation)]


def test_the_secret_fields_are_found_by_type() -> None:
    assert {"kallglot_api_key", "kallglot_webhook_secrets", "inbound_secrets", "admin_token"} <= set(
        SECRET_FIELDS
    )
    assert "analysis_profile" not in SECRET_FIELDS


@pytest.mark.parametrize("field", SECRET_FIELDS)
def test_every_secret_setting_can_come_from_a_file(
    field: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    variable = env_name(field)
    path = tmp_path / "secret"
    path.write_text(_valid_value(field) + "\n")
    monkeypatch.setenv(f"{variable}_FILE", str(path))
    value = getattr(load_settings(), field)
    values = value if isinstance(value, list) else [value]
    assert [item.get_secret_value() for item in values] == [_valid_value(field)]


def test_an_unreadable_secret_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = _refused(monkeypatch, {"RECEIVER_ADMIN_TOKEN_FILE": str(tmp_path / "absent")})
    assert message.startswith("invalid setting RECEIVER_ADMIN_TOKEN_FILE: cannot read")


def test_a_secret_file_holding_a_short_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "token"
    path.write_text("short\n")
    assert "RECEIVER_ADMIN_TOKEN" in _refused(monkeypatch, {"RECEIVER_ADMIN_TOKEN_FILE": str(path)})


def test_a_secret_and_its_file_together_are_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "token"
    path.write_text(LONG)
    message = _refused(monkeypatch, {"RECEIVER_ADMIN_TOKEN_FILE": str(path), "RECEIVER_ADMIN_TOKEN": LONG})
    assert "RECEIVER_ADMIN_TOKEN_FILE" in message
    assert LONG not in message


def test_the_sandbox_development_secrets_obey_the_rule() -> None:
    from receiver.commands.sandbox import sandbox_overrides

    settings = load_settings(**sandbox_overrides(8080))
    assert settings.admin_token is not None
    assert settings.kallglot_webhook_secrets
    assert settings.inbound_secrets


def test_a_command_reading_one_secret_takes_its_file_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "token"
    path.write_text(LONG + "\r\n")
    monkeypatch.setenv("RECEIVER_ADMIN_TOKEN_FILE", str(path))
    assert secret_from_env("RECEIVER_ADMIN_TOKEN") == LONG
    monkeypatch.setenv("RECEIVER_ADMIN_TOKEN", LONG)
    with pytest.raises(SecretFileError, match="RECEIVER_ADMIN_TOKEN_FILE"):
        secret_from_env("RECEIVER_ADMIN_TOKEN")
