"""Settings: environment over YAML over defaults, and one clear line for anything wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.registry import parse_handlers
from receiver.settings import ConfigError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "RECEIVER_CONFIG_FILE",
        "KALLGLOT_API_KEY",
        "RECEIVER_HANDLERS",
        "RECEIVER_POLL_AFTER_SECONDS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_match_the_contract() -> None:
    s = load_settings()
    assert s.kallglot_api_url == "https://api.kallglot.com/v1"
    assert s.database_url.get_secret_value() == "sqlite:///./data/receiver.db"
    assert s.analysis_include == ["summary", "sentiment", "compliance", "keywords", "performance"]
    assert (s.trigger, s.webhook_tolerance_seconds, s.poll_after_seconds) == ("session.ended", 300, 30.0)
    assert (s.analysis_deadline_seconds, s.credit_reserve, s.max_body_bytes) == (3600.0, 0, 1048576)
    assert (s.log_format, s.log_level) == ("json", "INFO")


def test_environment_wins_over_the_yaml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "RECEIVER_POLL_AFTER_SECONDS: 12\nanalysis_profile: sales\nhandlers:\n"
        "  - {name: out, type: webhook, url: 'https://example.com/${HOOK_PATH}'}\n"
    )
    monkeypatch.setenv("RECEIVER_CONFIG_FILE", str(config))
    monkeypatch.setenv("HOOK_PATH", "calls")
    monkeypatch.setenv("RECEIVER_POLL_AFTER_SECONDS", "7")

    s = load_settings()

    assert s.poll_after_seconds == 7
    assert s.analysis_profile == "sales"
    assert s.handlers[0]["url"] == "https://example.com/calls"


def test_comma_separated_secrets_allow_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALLGLOT_WEBHOOK_SECRETS", "new_secret_0123456789, old_secret_0123456789")
    s = load_settings()
    assert [x.get_secret_value() for x in s.kallglot_webhook_secrets] == [
        "new_secret_0123456789",
        "old_secret_0123456789",
    ]


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"RECEIVER_POLL_AFTER_SECONDS": "-1"}, "RECEIVER_POLL_AFTER_SECONDS"),
        ({"RECEIVER_TRIGGER": "call.ended"}, "RECEIVER_TRIGGER"),
        ({"RECEIVER_ANALYSIS_INCLUDE": "summary,tea"}, "RECEIVER_ANALYSIS_INCLUDE"),
        ({"RECEIVER_DATABASE_URL": "mysql://x"}, "RECEIVER_DATABASE_URL"),
        ({"KALLGLOT_API_URL": "ftp://x"}, "KALLGLOT_API_URL"),
        ({"RECEIVER_INBOUND_SECRETS": "whsec_???"}, "RECEIVER_INBOUND_SECRETS"),
        ({"RECEIVER_HANDLERS": "[not json"}, "RECEIVER_HANDLERS"),
        ({"RECEIVER_MAX_BODY_BYTES": "ten"}, "RECEIVER_MAX_BODY_BYTES"),
        ({"RECEIVER_CONFIG_FILE": "/nonexistent/config.yaml"}, "RECEIVER_CONFIG_FILE"),
        ({"RECEIVER_KALLGLOT_RATE_SHARE": "2"}, "RECEIVER_KALLGLOT_RATE_SHARE"),
        ({"RECEIVER_KALLGLOT_RATE_SHARE": "half"}, "RECEIVER_KALLGLOT_RATE_SHARE"),
    ],
)
def test_a_wrong_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], names: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert names in message
    assert "\n" not in message
    assert "???" not in message or names != "RECEIVER_INBOUND_SECRETS"


def test_the_api_key_and_secrets_are_required_outside_the_sandbox() -> None:
    with pytest.raises(ConfigError, match="KALLGLOT_API_KEY"):
        load_settings().require_production_secrets()
    load_settings(sandbox=True).require_production_secrets()


def test_an_unset_variable_in_the_yaml_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("handlers:\n  - {name: x, type: webhook, url: '${NOT_SET_ANYWHERE}'}\n")
    monkeypatch.setenv("RECEIVER_CONFIG_FILE", str(config))
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        load_settings()


def test_masked_settings_hide_every_secret() -> None:
    s = load_settings(
        kallglot_api_key="sk_live_verysecret",
        admin_token="admintoken123456789",
        database_url="postgresql://u:dbpassword@db/x",
        handlers=[{"name": "s", "type": "slack", "token": "xoxb-secret", "channel": "#c"}],
    )
    text = str(s.masked())
    for secret in ("verysecret", "admintoken123456789", "dbpassword", "xoxb-secret"):
        assert secret not in text
    assert "#c" in text


@pytest.mark.parametrize(
    ("handlers", "fragment"),
    [
        ([{"type": "file", "path": "x"}], "handlers[0].name"),
        ([{"name": "a", "type": "carrier-pigeon"}], "unknown handler type"),
        ([{"name": "a", "type": "file"}], "handlers[0] (a).path"),
        ([{"name": "a", "type": "file", "path": "x", "bogus": 1}], "bogus"),
        (
            [{"name": "a", "type": "file", "path": "x"}, {"name": "a", "type": "file", "path": "y"}],
            "used twice",
        ),
        ([{"name": "a", "type": "file", "path": "x", "when": "analysis.["}], "JMESPath"),
        ([{"name": "a", "type": "file", "path": "x", "events": ["exploded"]}], "events"),
        ([{"name": "a", "type": "webhook", "url": "not a url"}], "url"),
        (["just a string"], "mapping"),
    ],
)
def test_bad_handler_entries_are_named(handlers: list[object], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_handlers(handlers)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "share"), [(None, None), ("", None), ("auto", None), (" AUTO ", None), ("0.5", 0.5)]
)
def test_the_rate_share_is_counted_unless_a_number_fixes_it(
    monkeypatch: pytest.MonkeyPatch, raw: str | None, share: float | None
) -> None:
    if raw is not None:
        monkeypatch.setenv("RECEIVER_KALLGLOT_RATE_SHARE", raw)
    assert load_settings().kallglot_rate_share == share
