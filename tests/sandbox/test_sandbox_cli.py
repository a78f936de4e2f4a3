"""The sandbox's command-line flags map onto SandboxConfig, with its defaults for anything not given."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError

from receiver.sandbox import DEV_WEBHOOK_SECRET, SandboxConfig
from receiver.sandbox.cli import add_arguments, config_from_args


def parse(*argv: str) -> SandboxConfig:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8081)  # the command's own flags live alongside
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_no_flags_means_the_documented_defaults() -> None:
    config = parse()
    assert config == SandboxConfig()
    assert config.webhook_secret == DEV_WEBHOOK_SECRET


def test_flags_set_their_knobs() -> None:
    config = parse(
        "--webhook-url=http://127.0.0.1:8080/webhooks/kallglot",
        "--webhook-secret=s",
        "--credits=5",
        "--rate-limit=10",
        "--analysis-latency=0",
        "--error-rate=0.1",
        "--webhook-drop-rate=0.5",
        "--result-shape=old",
        "--missing-session=sess_a",
        "--missing-session=sess_b",
        "--organization-inactive",
        "--webhook-without-result",
        "--seed=3",
    )
    assert config.model_dump(exclude_defaults=True) == {
        "webhook_url": "http://127.0.0.1:8080/webhooks/kallglot",
        "webhook_secret": "s",
        "credits": 5,
        "rate_limit": 10,
        "analysis_latency_seconds": 0.0,
        "error_rate": 0.1,
        "webhook_drop_rate": 0.5,
        "result_shape": "old",
        "missing_sessions": ["sess_a", "sess_b"],
        "organization_active": False,
        "webhook_include_result": False,
        "seed": 3,
    }


def test_an_out_of_range_value_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="error_rate"):
        parse("--error-rate=1.5")


def test_session_call_gives_a_session_its_carrier_leg() -> None:
    config = parse("--session-call=sess_a=twilio:CA0123", "--session-call=sess_b=telnyx:v3:abc")
    assert {k: v.model_dump(exclude_none=True) for k, v in config.session_providers.items()} == {
        "sess_a": {"type": "twilio", "call_sid": "CA0123", "status": "completed"},
        "sess_b": {"type": "telnyx", "call_control_id": "v3:abc", "status": "completed"},
    }


@pytest.mark.parametrize("bad", ["sess_a", "sess_a=fax:1", "sess_a=twilio:", "=twilio:CA1"])
def test_a_malformed_session_call_is_a_usage_error(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(f"--session-call={bad}")
    assert exit_.value.code == 2
    assert "SESSION_ID=twilio:CALL_SID" in capsys.readouterr().err
