"""The command line as an operator runs it: check-config, migrate, calls show, dead letters, send."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import receiver
from tests.integration.harness import ADMIN_TOKEN, Stack, wait_for


def run(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "KALLGLOT_"))}
    return subprocess.run(
        [sys.executable, "-m", "receiver", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_check_config_masks_every_secret_and_exits_zero() -> None:
    env = {
        "KALLGLOT_API_KEY": "sk_live_supersecret",
        "KALLGLOT_WEBHOOK_SECRETS": "whsecret-one-0123456789,whsecret-two-0123456789",
        "RECEIVER_ADMIN_TOKEN": "admin-supersecret",
        "RECEIVER_HANDLERS": json.dumps(
            [
                {
                    "name": "hook",
                    "type": "webhook",
                    "url": "https://x.example/h",
                    "secret": "whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
                }
            ]
        ),
    }
    result = run(["check-config"], env)

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["KALLGLOT_API_KEY"] == "***"
    assert shown["RECEIVER_HANDLERS"][0]["secret"] == "***"
    for secret in ("supersecret", "whsecret-one", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"):
        assert secret not in result.stdout


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "KALLGLOT_API_KEY"),
        ({"KALLGLOT_API_KEY": "sk_test_x"}, "KALLGLOT_WEBHOOK_SECRETS"),
        (
            {
                "KALLGLOT_API_KEY": "k",
                "KALLGLOT_WEBHOOK_SECRETS": "s-0123456789abcdef",
                "RECEIVER_POLL_AFTER_SECONDS": "0",
            },
            "RECEIVER_POLL_AFTER_SECONDS",
        ),
        (
            {
                "KALLGLOT_API_KEY": "k",
                "KALLGLOT_WEBHOOK_SECRETS": "s-0123456789abcdef",
                "RECEIVER_HANDLERS": '[{"name": "s", "type": "slack"}]',
            },
            "handlers[0] (s)",
        ),
    ],
)
def test_check_config_fails_with_one_line_naming_the_setting(env: dict[str, str], named: str) -> None:
    result = run(["check-config"], env)

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert named in lines[0]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RECEIVER_TRIGGER": "x"}, "RECEIVER_TRIGGER"),
        ({"SENTRY_DSN": "not-a-dsn"}, "SENTRY_DSN"),
        ({"RECEIVER_DATABASE_URL": "sqlite:////proc/nowhere/receiver.db"}, "RECEIVER_DATABASE_URL"),
        ({"RECEIVER_DATABASE_URL": "postgresql://u:topsecret@127.0.0.1:1/db"}, "RECEIVER_DATABASE_URL"),
    ],
    ids=["bad-trigger", "bad-sentry-dsn", "unwritable-sqlite", "unreachable-postgres"],
)
def test_serve_refuses_to_start_with_one_line_naming_the_setting(env: dict[str, str], named: str) -> None:
    result = run(
        ["serve", "--port", "0", "--admin-port", "0"],
        {"KALLGLOT_API_KEY": "k", "KALLGLOT_WEBHOOK_SECRETS": "s-0123456789abcdef", **env},
    )

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "topsecret" not in result.stderr


def test_migrate_then_calls_show_and_dead_letters_read_the_database(tmp_path: Path) -> None:
    env = {"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/r.db"}

    first, second = run(["migrate"], env), run(["migrate"], env)
    missing = run(["calls", "show", "sess_nothing"], env)
    dead = run(["dead-letters", "list", "--json"], env)

    assert first.returncode == 0
    shipped = len(list((Path(receiver.__file__).parent / "store/migrations/sqlite").glob("*.sql")))
    assert f"migrations applied: {shipped}" in first.stdout
    assert "migrations applied: 0" in second.stdout
    assert missing.returncode == 1
    assert "sess_nothing" in missing.stderr
    assert json.loads(dead.stdout) == []


async def test_send_signs_events_the_receiver_accepts_and_follows_the_call(stack: Stack) -> None:
    result = await _arun(
        [
            "send",
            "session.ended",
            "--session",
            "sess_cli1",
            "--to",
            stack.url,
            "--admin-url",
            stack.admin_url,
            "--admin-token",
            ADMIN_TOKEN,
            "--wait",
            "20",
        ]
    )

    assert result.returncode == 0, result.stderr
    assert "HTTP 200" in result.stdout
    assert "state=delivered" in result.stdout
    assert stack.charged("sess_cli1") == 1


async def test_send_call_ended_uses_the_given_standard_webhooks_secret(stack: Stack) -> None:
    from tests.integration.harness import INBOUND_SECRET

    result = await _arun(
        [
            "send",
            "call-ended",
            "--session",
            "sess_cli2",
            "--to",
            stack.url,
            "--secret",
            INBOUND_SECRET,
            "--wait",
            "0",
        ]
    )

    assert result.returncode == 0, result.stdout + result.stderr
    await wait_for(lambda: stack.charged("sess_cli2") == 1, what="the call to be started")


async def _arun(args: list[str]) -> Any:
    import asyncio

    return await asyncio.to_thread(run, args)


def test_check_config_hides_credentials_inside_urls_and_secret_files_work(tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text("admin-token-from-a-file\n")
    env = {
        "KALLGLOT_API_KEY": "sk_live_supersecret",
        "KALLGLOT_WEBHOOK_SECRETS": "whsecret-one-0123456789",
        "RECEIVER_ADMIN_TOKEN_FILE": str(token_file),
        "RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/r.db",
        "RECEIVER_HANDLERS": json.dumps(
            [
                {
                    "name": "hook",
                    "type": "webhook",
                    "url": "https://user:urlpassword@x.example/h?token=urltoken",
                },
                {
                    "name": "chat",
                    "type": "slack",
                    "webhook_url": "https://hooks.slack.com/services/T1/B2/slackpath",
                },
            ]
        ),
    }
    result = run(["check-config"], env)

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["RECEIVER_HANDLERS"][0]["url"] == "https://user:***@x.example/h?token=***"
    assert shown["RECEIVER_HANDLERS"][1]["webhook_url"] == "https://hooks.slack.com/services/T1/B2/***"
    for secret in ("urlpassword", "urltoken", "slackpath", "admin-token-from-a-file"):
        assert secret not in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        ([], {"RECEIVER_MAX_CONNECTIONS": "0"}, "RECEIVER_MAX_CONNECTIONS"),
        ([], {"RECEIVER_BODY_TIMEOUT_SECONDS": "-1"}, "RECEIVER_BODY_TIMEOUT_SECONDS"),
        ([], {"RECEIVER_ADMIN_PORT": "70000"}, "RECEIVER_ADMIN_PORT"),
        (["--admin-port", "{busy}"], {}, "RECEIVER_ADMIN_PORT"),
        (["--port", "{busy}"], {}, "RECEIVER_PORT"),
        ([], {"RECEIVER_ADMIN_HOST": "192.0.2.1"}, "RECEIVER_ADMIN_HOST"),
        ([], {"RECEIVER_ADMIN_HOST": "no-such-host.invalid"}, "RECEIVER_ADMIN_HOST"),
    ],
    ids=[
        "max-connections-0",
        "negative-body-timeout",
        "admin-port-out-of-range",
        "admin-port-busy",
        "port-busy",
        "admin-host-not-local",
        "admin-host-unknown",
    ],
)
def test_serve_refuses_bad_listener_settings_with_one_line_naming_the_setting(
    args: list[str], env: dict[str, str], named: str
) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        defaults = ["--port", "0", "--admin-port", "0"]
        result = run(
            ["serve", *defaults, *(arg.replace("{busy}", port) for arg in args)],
            {"KALLGLOT_API_KEY": "k", "KALLGLOT_WEBHOOK_SECRETS": "s-0123456789abcdef", **env},
        )

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
