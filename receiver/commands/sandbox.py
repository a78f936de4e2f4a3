"""``serve --sandbox``'s development defaults and banner, and the ``sandbox`` command (the emulator alone)."""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any

from receiver.commands.errors import fail
from receiver.secret_settings import file_variable_set
from receiver.settings import Settings, load_settings

#: Signs ``/events/call-ended`` in ``serve --sandbox`` unless RECEIVER_INBOUND_SECRETS is set (documented).
DEV_INBOUND_SECRET = "whsec_" + base64.b64encode(b"kallglot-receiver-sandbox-dev").decode()
#: Admin token of ``serve --sandbox`` unless RECEIVER_ADMIN_TOKEN is set, so ``send`` can follow the call.
DEV_ADMIN_TOKEN = "sandbox-admin-token"  # noqa: S105 (documented development token, 16+ bytes)
DEFAULT_ADMIN_PORT = 9090
DEFAULT_DELIVERIES = "./data/deliveries.jsonl"


def sandbox_overrides(port: int) -> dict[str, Any]:
    """Settings for ``serve --sandbox``: what the environment does not set points at the sandbox."""
    from receiver.sandbox import DEV_API_KEY, DEV_WEBHOOK_SECRET

    overrides: dict[str, Any] = {"sandbox": True}
    defaults = {
        "KALLGLOT_API_URL": ("kallglot_api_url", f"http://127.0.0.1:{port}/sandbox/v1"),
        "KALLGLOT_API_KEY": ("kallglot_api_key", DEV_API_KEY),
        "KALLGLOT_WEBHOOK_SECRETS": ("kallglot_webhook_secrets", DEV_WEBHOOK_SECRET),
        "RECEIVER_INBOUND_SECRETS": ("inbound_secrets", DEV_INBOUND_SECRET),
        "RECEIVER_ADMIN_TOKEN": ("admin_token", DEV_ADMIN_TOKEN),
    }
    from receiver.carriers.dev import sandbox_defaults  # telephony presets

    defaults |= sandbox_defaults()
    for env, (name, value) in defaults.items():
        if not file_variable_set(env):
            overrides[name] = value
    return overrides


def sandbox_settings(port: int) -> Settings:
    """What ``serve --sandbox`` runs with (also what ``check-config --sandbox`` shows): with no
    handlers configured, results go to a ``file`` handler."""
    overrides = sandbox_overrides(port)
    settings = load_settings(**overrides)
    if not settings.handlers:
        settings = load_settings(
            **overrides, handlers=[{"name": "file", "type": "file", "path": DEFAULT_DELIVERIES}]
        )
    return settings


def print_sandbox_banner(port: int, admin_port: int, settings: Settings) -> None:
    paths = [str(h.get("path")) for h in settings.handlers if h.get("type") == "file"]
    admin = f"http://127.0.0.1:{admin_port}"
    follow = "" if admin_port == DEFAULT_ADMIN_PORT else f" --admin-url {admin}"
    to = "" if port == 8080 else f" --to http://127.0.0.1:{port}"
    print(
        f"""
kallglot-receiver is running with the built-in Kallglot sandbox
  public (webhooks): http://127.0.0.1:{port}    (sandbox API: http://127.0.0.1:{port}/sandbox/v1)
  admin:             {admin}    (metrics: {admin}/metrics, API: {admin}/openapi.json)
  end a call:        kallglot-receiver send session.ended --session sess_demo1{to}{follow}
  or, telephony:     kallglot-receiver send call-ended --session sess_demo2{to}{follow}
  follow it:         kallglot-receiver calls show sess_demo1
  results go to:     {", ".join(paths) or "the configured handlers"}
""",
        file=sys.stderr,
        flush=True,
    )


def cmd_sandbox(args: argparse.Namespace) -> int:
    import uvicorn

    from receiver.sandbox import Sandbox
    from receiver.sandbox.cli import config_from_args

    try:
        config = config_from_args(args)
    except ValueError as exc:
        return fail(str(exc))
    sandbox = Sandbox(config)
    print(f"Kallglot sandbox on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    uvicorn.run(sandbox.app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
