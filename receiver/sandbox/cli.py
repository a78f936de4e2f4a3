"""Command-line flags for the sandbox's knobs; the ``sandbox`` command itself lives in ``receiver.commands.sandbox``."""

from __future__ import annotations

import argparse
from typing import Any

from .config import DEV_WEBHOOK_SECRET, SandboxConfig

# flag, config field, type, help; every default is None so that SandboxConfig's defaults stay the only ones
_FLAGS: tuple[tuple[str, str, Any, str], ...] = (
    ("--webhook-url", "webhook_url", str, "where signed webhooks go (default: send none)"),
    ("--webhook-secret", "webhook_secret", str, f"webhook signing secret (default: {DEV_WEBHOOK_SECRET})"),
    ("--api-key", "api_key", str, "accept only this key (default: any sk_test_/sk_live_ key)"),
    ("--credits", "credits", int, "API credit balance (default: 1000)"),
    ("--rate-limit", "rate_limit", int, "requests per window over all API routes (default: 600)"),
    ("--analysis-rate-limit", "analysis_rate_limit", int, "requests per window for analysis POSTs"),
    ("--rate-limit-window", "rate_limit_window_seconds", float, "rate-limit window in seconds (default: 60)"),
    (
        "--analysis-latency",
        "analysis_latency_seconds",
        float,
        "seconds until an analysis finishes (default: 2)",
    ),
    ("--analysis-failure-rate", "analysis_failure_rate", float, "fraction of analyses that fail"),
    (
        "--transcript-delay",
        "transcript_delay_seconds",
        float,
        "seconds until a session's transcript is ready",
    ),
    ("--error-rate", "error_rate", float, "fraction of API requests answered 500/503 before any effect"),
    (
        "--error-after-effect-rate",
        "error_after_effect_rate",
        float,
        "fraction of accepted analysis POSTs answered 500",
    ),
    ("--response-delay", "response_delay_seconds", float, "added latency on every API response"),
    ("--webhook-drop-rate", "webhook_drop_rate", float, "fraction of analysis webhooks never sent"),
    ("--webhook-duplicate-rate", "webhook_duplicate_rate", float, "fraction of webhooks sent twice"),
    (
        "--webhook-retry-scale",
        "webhook_retry_scale",
        float,
        "multiplies Kallglot's retry schedule (default: 1)",
    ),
    ("--webhook-timeout", "webhook_timeout_seconds", float, "seconds to wait for a 2xx (default: 30)"),
    ("--seed", "seed", int, "seed for the knobs' randomness"),
)


def _session_leg(text: str) -> tuple[str, dict[str, str]]:
    """``SESSION_ID=twilio:CA…`` / ``SESSION_ID=telnyx:v3:…``: that session's carrier leg."""
    session_id, _, leg = text.partition("=")
    carrier, _, call_id = leg.partition(":")
    keys = {"twilio": "call_sid", "telnyx": "call_control_id"}
    if not session_id or carrier not in keys or not call_id:
        raise argparse.ArgumentTypeError(
            f"expected SESSION_ID=twilio:CALL_SID or SESSION_ID=telnyx:ID, not {text!r}"
        )
    return session_id, {"type": carrier, keys[carrier]: call_id}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per knob to ``parser`` (a flag not given keeps the knob's default)."""
    group = parser.add_argument_group("sandbox behaviour")
    for flag, dest, type_, help_ in _FLAGS:
        group.add_argument(flag, dest=dest, type=type_, default=None, help=help_)
    group.add_argument(
        "--result-shape", dest="result_shape", choices=["new", "old"], default=None, help="analysis shape"
    )
    group.add_argument(
        "--missing-session",
        dest="missing_sessions",
        action="append",
        default=None,
        metavar="SESSION_ID",
        help="answer 404 for this session id (repeatable)",
    )
    group.add_argument(
        "--session-call",
        dest="session_providers",
        action="append",
        type=_session_leg,
        default=None,
        metavar="SESSION_ID=CARRIER:CALL_ID",
        help="the session's carrier leg, named by its provider object, e.g. sess_x=twilio:CA… (repeatable)",
    )
    group.add_argument(
        "--organization-inactive",
        dest="organization_active",
        action="store_false",
        default=None,
        help="answer 403 organization_inactive to analysis POSTs",
    )
    group.add_argument(
        "--webhook-without-result",
        dest="webhook_include_result",
        action="store_false",
        default=None,
        help="analysis webhooks carry only {id, object, session_id, status}",
    )


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    """The SandboxConfig for the flags given; raises pydantic.ValidationError on a bad value."""
    fields = [dest for _, dest, _, _ in _FLAGS]
    fields += ["result_shape", "missing_sessions", "organization_active", "webhook_include_result"]
    given = {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}
    if getattr(args, "session_providers", None):
        given["session_providers"] = dict(args.session_providers)
    return SandboxConfig.model_validate(given)
