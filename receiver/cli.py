"""The ``kallglot-receiver`` command line (CONTRACT §2): argument parsing and dispatch; the commands
live in ``receiver.commands`` (``serve`` stays here: it is the process's start-up)."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Sequence
from typing import Any

from receiver.commands.banner import warn_without_handlers
from receiver.commands.errors import fail as _fail
from receiver.commands.operators import add_commands as add_operator_commands
from receiver.commands.sandbox import DEFAULT_DELIVERIES, cmd_sandbox, sandbox_overrides
from receiver.commands.sandbox import print_sandbox_banner as _print_sandbox_banner
from receiver.commands.send import DEFAULT_ADMIN_URL, DEFAULT_URL, cmd_send
from receiver.commands.setup import cmd_check_config, cmd_migrate
from receiver.settings import ConfigError, load_settings
from receiver.version import package_version


def cmd_serve(args: argparse.Namespace) -> int:
    from starlette.routing import Mount

    from receiver import tracing
    from receiver.app import admin_app, create_app
    from receiver.listeners import Address, bind, run, serve
    from receiver.observability import configure_logging, configure_sentry

    sockets: list[Any] = []
    try:
        base = load_settings()
        port = base.port if args.port is None else args.port
        admin_port = base.admin_port if args.admin_port is None else args.admin_port
        sockets.append(bind(Address(args.host, port, "RECEIVER_PORT")))
        admin_host, host_setting = (
            (base.admin_host, "RECEIVER_ADMIN_HOST") if base.admin_host else (args.host, "--host")
        )
        sockets.append(bind(Address(admin_host, admin_port, "RECEIVER_ADMIN_PORT", host_setting)))
        port, admin_port = (sock.getsockname()[1] for sock in sockets)  # the real ones, also for port 0
        overrides = sandbox_overrides(port) if args.sandbox else {}
        overrides |= {"port": port, "admin_port": admin_port}
        settings = load_settings(**overrides)
        if args.sandbox and not settings.handlers:
            settings = load_settings(
                **overrides, handlers=[{"name": "file", "type": "file", "path": DEFAULT_DELIVERIES}]
            )
        configure_logging(settings.log_format, settings.log_level)
        dsn = settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else None
        configure_sentry(dsn, settings.sentry_environment)
        tracing.configure(package_version())
        mounts: list[Mount] = []
        startup, shutdown = [], []
        if args.sandbox:
            from receiver.sandbox import Sandbox, SandboxConfig

            sandbox = Sandbox(
                SandboxConfig(
                    webhook_url=f"http://127.0.0.1:{port}/webhooks/kallglot",
                    webhook_secret=settings.kallglot_webhook_secrets[0].get_secret_value(),
                )
            )
            mounts.append(Mount("/sandbox", app=sandbox.app))
            startup.append(sandbox.start)
            shutdown.append(sandbox.aclose)
        # Warnings and the banner only once start-up cannot fail with one line (the store is ready).
        ready = [lambda: warn_without_handlers(settings.handlers)]
        if args.sandbox:
            ready.append(lambda: _print_sandbox_banner(port, admin_port, settings))
        app = create_app(settings, mounts=mounts, on_startup=startup, on_shutdown=shutdown, on_ready=ready)
        # Startup objects never die: keep them out of the collector, and collect the young generation
        # less often, since every request allocates many short-lived objects.
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        return run(serve(app, admin_app(app), settings, (sockets[0], sockets[1])))
    except ConfigError as exc:
        return _fail(str(exc))
    finally:
        for sock in sockets:
            sock.close()


# --- parser -----------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    from receiver.sandbox.cli import add_arguments

    root = argparse.ArgumentParser(prog="kallglot-receiver", description=__doc__)
    root.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = root.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="HTTP endpoints and background workers")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, help="public listener (default RECEIVER_PORT or 8080)")
    serve.add_argument("--admin-port", type=int, help="admin listener (default RECEIVER_ADMIN_PORT or 9090)")
    serve.add_argument("--sandbox", action="store_true", help="run the Kallglot sandbox in-process")
    serve.set_defaults(func=cmd_serve)

    sandbox = sub.add_parser("sandbox", help="the Kallglot API emulator on its own")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8090)
    add_arguments(sandbox)
    sandbox.set_defaults(func=cmd_sandbox)

    send = sub.add_parser("send", help="sign and send a test event to a running receiver")
    send.add_argument(
        "event",
        choices=[
            *("session.ended", "transcript.ready", "analysis.complete", "analysis.failed", "call-ended"),
            *("twilio.completed", "telnyx.hangup"),
        ],
    )
    send.add_argument("--session", required=True, help="sess_…")
    send.add_argument("--to", default=DEFAULT_URL, help=f"receiver base URL (default {DEFAULT_URL})")
    send.add_argument("--secret", help="signing secret (default: the sandbox's development secret)")
    send.add_argument("--analysis", help="analysis id for analysis.* events")
    send.add_argument(
        "--end-session", action="store_true", help="call-ended: ask the receiver to end the session"
    )
    send.add_argument(
        "--admin-token", help="to follow the call (default: RECEIVER_ADMIN_TOKEN or the sandbox's)"
    )
    send.add_argument(
        "--admin-url",
        default=DEFAULT_ADMIN_URL,
        help=f"admin listener base URL, to follow the call (default {DEFAULT_ADMIN_URL})",
    )
    send.add_argument("--wait", type=float, default=30.0, help="seconds to follow the call (0: don't follow)")
    send.set_defaults(func=cmd_send)

    sub.add_parser("migrate", help="create or upgrade the database schema").set_defaults(func=cmd_migrate)

    check = sub.add_parser("check-config", help="print the effective settings, secrets masked")
    check.add_argument("--probe", action="store_true", help="also check credentials against each destination")
    check.add_argument("--sandbox", action="store_true", help="check as 'serve --sandbox' would run")
    check.set_defaults(func=cmd_check_config)

    add_operator_commands(sub)  # calls, dead-letters, replay, replays, handlers, starting
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        return _fail(str(exc))
    except ValueError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
