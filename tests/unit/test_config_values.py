"""``${VAR}`` arrives verbatim in the parsed YAML; check-config hides the credentials inside URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.redact import mask_url
from receiver.settings import Settings, env_name, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, info in Settings.model_fields.items():
        monkeypatch.delenv(env_name(name, info), raising=False)


@pytest.mark.parametrize(
    "value",
    [
        "profile #2",
        "sales: emea",
        "two\nlines",
        "*not-an-alias",
        "&not-an-anchor",
        "!not-a-tag",
        "'quoted' and \"double\"",
        "${NOT_EXPANDED_AGAIN}",
    ],
    ids=["hash", "colon", "newline", "star", "ampersand", "bang", "quotes", "dollar-brace"],
)
def test_a_variable_arrives_verbatim(value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "analysis_profile: ${PROFILE}\n"
        "RECEIVER_POLL_AFTER_SECONDS: 12\n"
        "handlers:\n"
        "  - name: out\n"
        "    type: file\n"
        "    path: /tmp/${PROFILE}.jsonl\n"
    )
    monkeypatch.setenv("RECEIVER_CONFIG_FILE", str(config))
    monkeypatch.setenv("PROFILE", value)

    settings = load_settings()

    assert settings.analysis_profile == value
    assert settings.poll_after_seconds == 12
    assert settings.handlers == [{"name": "out", "type": "file", "path": f"/tmp/{value}.jsonl"}]


def test_a_variable_shared_through_a_yaml_anchor_is_substituted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "handlers:\n"
        "  - &base {name: a, type: webhook, url: 'https://example.com/${HOOK}'}\n"
        "  - {<<: *base, name: b}\n"
    )
    monkeypatch.setenv("RECEIVER_CONFIG_FILE", str(config))
    monkeypatch.setenv("HOOK", "x: #y")
    handlers = load_settings().handlers
    assert [h["url"] for h in handlers] == ["https://example.com/x: #y"] * 2


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pass@example.com/x", "https://user:***@example.com/x"),
        ("https://tok3n@example.com:8443/x", "https://***@example.com:8443/x"),
        ("https://example.com/h?token=abc&name=calls", "https://example.com/h?token=***&name=calls"),
        (
            "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=abc&X-Amz-Credential=AK&X-Amz-Expires=60",
            "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=***&X-Amz-Credential=***&X-Amz-Expires=60",
        ),
        (
            "https://e.com/?api_key=1&sig=2&password=3&secret=4",
            "https://e.com/?api_key=***&sig=***&password=***&secret=***",
        ),
        (
            "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
            "https://hooks.slack.com/services/T000/B000/***",
        ),
        ("https://hooks.slack.com/triggers/T0/1/SECRET2", "https://hooks.slack.com/triggers/T0/1/***"),
        ("https://example.com/a#access_token=x", "https://example.com/a#***"),
        ("postgresql://u:dbpw@db:5432/x?sslmode=require", "postgresql://u:***@db:5432/x?sslmode=require"),
        ("https://example.com:notaport/x", "***"),
        ("https://api.kallglot.com/v1", "https://api.kallglot.com/v1"),
    ],
    ids=[
        "password",
        "token-as-user",
        "token-param",
        "s3-presigned",
        "params",
        "slack-services",
        "slack-triggers",
        "fragment",
        "postgres",
        "unparseable",
        "nothing-secret",
    ],
)
def test_mask_url_hides_credentials_and_keeps_the_rest(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_check_config_masks_urls_in_settings_and_handler_options() -> None:
    settings = load_settings(
        kallglot_api_url="https://proxy-user:proxypw@kallglot.example.com/v1",
        database_url="postgresql://receiver:dbpassword@db.internal:5432/receiver",
        sentry_dsn="https://publickey123@o1.ingest.sentry.io/42",
        handlers=[
            {
                "name": "slack",
                "type": "slack",
                "webhook_url": "https://hooks.slack.com/services/T1/B2/slacksecret",
            },
            {"name": "hook", "type": "webhook", "url": "https://crm.example.com/in?token=urltoken&v=2"},
            {"name": "raw", "type": "webhook", "webhook_url": "https://crm.example.com/hooks/pathsecret"},
        ],
    )
    shown = settings.masked()
    text = str(shown)
    for secret in ("proxypw", "dbpassword", "publickey123", "slacksecret", "urltoken", "pathsecret"):
        assert secret not in text
    assert shown["KALLGLOT_API_URL"] == "https://proxy-user:***@kallglot.example.com/v1"
    assert shown["RECEIVER_DATABASE_URL"] == "postgresql://receiver:***@db.internal:5432/receiver"
    assert shown["RECEIVER_HANDLERS"][0]["webhook_url"] == "https://hooks.slack.com/services/T1/B2/***"
    assert shown["RECEIVER_HANDLERS"][1]["url"] == "https://crm.example.com/in?token=***&v=2"
    assert shown["RECEIVER_HANDLERS"][2]["webhook_url"] == "***"
