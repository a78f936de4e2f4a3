"""The ``kallglot-receiver`` command line (CONTRACT §2)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from receiver.commands.banner import warn_without_handlers
from receiver.commands.operators import add_commands as add_operator_commands
from receiver.secret_settings import SecretFileError, file_variable_set, secret_from_env
from receiver.settings import ConfigError, Settings, load_settings
from receiver.signing import sign_kallglot, sign_standard_webhooks
from receiver.version import package_version

#: Signs ``/events/call-ended`` in ``serve --sandbox`` unless RECEIVER_INBOUND_SECRETS is set (documented).
DEV_INBOUND_SECRET = "whsec_" + base64.b64encode(b"kallglot-receiver-sandbox-dev").decode()
#: Admin token of ``serve --sandbox`` unless RECEIVER_ADMIN_TOKEN is set, so ``send`` can follow the call.
DEV_ADMIN_TOKEN = "sandbox-admin-token"  # noqa: S105 (documented development token, 16+ bytes)
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_ADMIN_PORT = 9090
DEFAULT_ADMIN_URL = f"http://127.0.0.1:{DEFAULT_ADMIN_PORT}"
DEFAULT_DELIVERIES = "./data/deliveries.jsonl"


def _fail(message: str) -> int:
    print(f"kallglot-receiver: {message}", file=sys.stderr)
    return 2


# --- serve / sandbox --------------------------------------------------------------------------


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


def _print_sandbox_banner(port: int, admin_port: int, settings: Settings) -> None:
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
        return _fail(str(exc))
    sandbox = Sandbox(config)
    print(f"Kallglot sandbox on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    uvicorn.run(sandbox.app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


# --- send -------------------------------------------------------------------------------------


def build_event(event: str, session_id: str, analysis_id: str | None, now: float) -> dict[str, Any]:
    created = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
    if event == "session.ended":
        data: dict[str, Any] = {"id": session_id, "object": "session", "status": "ended", "duration": 245.3}
    elif event == "transcript.ready":
        data = {
            "id": f"trn_{session_id}",
            "object": "transcript",
            "session_id": session_id,
            "status": "completed",
        }
    else:
        data = {
            "id": analysis_id or f"anl_{uuid.uuid5(uuid.NAMESPACE_URL, session_id).hex[:16]}",
            "object": "analysis",
            "session_id": session_id,
            "status": "failed" if event == "analysis.failed" else "completed",
        }
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": event,
        "api_version": "v1",
        "created_at": created,
        "data": data,
    }


def cmd_send(args: argparse.Namespace) -> int:
    from receiver.sandbox import DEV_WEBHOOK_SECRET

    now = time.time()
    base = args.to.rstrip("/")
    if args.event in ("twilio.completed", "telnyx.hangup"):
        from receiver.carriers.dev import send_request

        url, body, headers = send_request(args.event, base, args.session, args.secret)
    elif args.event == "call-ended":
        body = json.dumps(
            {
                "session_id": args.session,
                "call_id": f"CA{uuid.uuid4().hex[:16]}",
                "ended_at": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
                "duration_seconds": 245.3,
                "direction": "inbound",
                "from": "+14155550100",
                "to": "+14155550199",
                "end_session": args.end_session,
            }
        ).encode()
        url = f"{base}/events/call-ended"
        headers = sign_standard_webhooks(
            args.secret or DEV_INBOUND_SECRET, f"msg_{uuid.uuid4().hex}", int(now), body
        )
    else:
        body = json.dumps(build_event(args.event, args.session, args.analysis, now)).encode()
        url = f"{base}/webhooks/kallglot"
        headers = {"Kallglot-Signature": sign_kallglot(args.secret or DEV_WEBHOOK_SECRET, int(now), body)}
    headers.setdefault("Content-Type", "application/json")
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        return _fail(f"cannot reach {url}: {exc}")
    print(f"{args.event} for {args.session} -> {url}: HTTP {response.status_code} {response.text}")
    if response.status_code >= 300:
        return 1
    if args.wait > 0:
        try:
            token = args.admin_token or secret_from_env("RECEIVER_ADMIN_TOKEN") or DEV_ADMIN_TOKEN
        except SecretFileError as exc:
            return _fail(str(exc))
        return _follow(args.admin_url.rstrip("/"), args.session, token, args.wait)
    return 0


def _follow(base: str, session_id: str, token: str, wait: float) -> int:
    """Print the call's progress (a line only when what it shows changes) until it is delivered,
    skipped, failed or dead-lettered, or ``wait`` seconds pass. Exit 1 unless it was delivered
    with a completed analysis."""
    deadline = time.monotonic() + wait
    last: tuple[Any, ...] | None = None
    with httpx.Client(timeout=5, headers={"Authorization": f"Bearer {token}"}) as client:
        while time.monotonic() < deadline:
            try:
                response = client.get(f"{base}/admin/calls/{session_id}")
            except httpx.HTTPError:
                time.sleep(0.3)
                continue
            if response.status_code in (401, 404) and "error" in response.json():
                code = response.json()["error"].get("code")
                if code != "not_found" or "RECEIVER_ADMIN_TOKEN" in response.text:
                    print(
                        "(cannot follow the call: the admin API needs RECEIVER_ADMIN_TOKEN / --admin-token)"
                    )
                    return 0
            elif response.status_code == 200:
                view = response.json()
                parts = [f"state={view['state']}"]
                if view["analysis_id"]:
                    parts.append(f"analysis={view['analysis_id']}")
                if view["reason"]:
                    parts.append(f"reason={view['reason']!r}")
                parts += [f"{d['handler']}:{d['state']}" for d in view["deliveries"]]
                if tuple(parts) != last:
                    last = tuple(parts)
                    print("  " + " ".join(parts), flush=True)
                outcome = _outcome(view)
                if outcome is not None:
                    return outcome
            time.sleep(0.3)
    state = last[0].removeprefix("state=") if last else "unknown"
    print(f"  (still {state} after {wait:g}s; see 'kallglot-receiver calls show {session_id}')")
    return 1


def _outcome(view: dict[str, Any]) -> int | None:
    """None while the call is still going; else the exit code (0 only for a delivered success)."""
    dead = [d["handler"] for d in view["deliveries"] if d["state"] == "dead"]
    if dead:
        print(f"  dead-lettered delivery to {', '.join(dead)}: see 'kallglot-receiver dead-letters list'")
        return 1
    if view["state"] == "skipped":
        return 1
    if view["state"] == "delivered":
        return 1 if view.get("analysis_status") == "failed" else 0
    return None


# --- store commands ---------------------------------------------------------------------------


async def _with_store(fn: Any) -> Any:
    from receiver.store import open_store

    settings = load_settings()
    store = open_store(settings.database_url.get_secret_value())
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


def cmd_migrate(args: argparse.Namespace) -> int:
    from receiver.store import StoreError

    async def run(store: Any) -> int:
        count: int = await store.migrate()
        return count

    try:
        count = asyncio.run(_with_store(run))
    except StoreError as exc:
        print(f"kallglot-receiver: cannot migrate (RECEIVER_DATABASE_URL): {exc}", file=sys.stderr)
        return 1
    print(f"migrations applied: {count}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from receiver.registry import parse_handlers

    settings = sandbox_settings(8080) if args.sandbox else load_settings()
    settings.require_production_secrets()
    options = parse_handlers(settings.handlers)
    print(json.dumps(settings.masked(), indent=2, default=str))
    if args.probe:
        return asyncio.run(_probe(settings, options))
    return 0


async def _probe(settings: Settings, options: Sequence[Any]) -> int:
    from receiver.delivery import DeliveryError, HandlerContext
    from receiver.kallglot import HandlerReader, KallglotClient, KallglotError
    from receiver.metrics import Metrics
    from receiver.registry import build_handler

    key = settings.kallglot_api_key.get_secret_value() if settings.kallglot_api_key else ""
    client = KallglotClient(settings.kallglot_api_url, key, metrics=Metrics())
    context = HandlerContext(kallglot=HandlerReader(client), clock=time.time, sleep=asyncio.sleep)
    failed = 0
    try:
        for option in options:
            handler = build_handler(option, context)
            try:
                await handler.probe()
                print(f"probe {option.name} ({option.type}): ok")
            except DeliveryError as exc:
                failed += 1
                print(f"probe {option.name} ({option.type}): FAILED: {exc.reason}")
            finally:
                await handler.aclose()
        try:
            await client.get_session("sess_probe")
            print("probe kallglot: ok")
        except KallglotError as exc:
            ok = exc.status == 404
            failed += 0 if ok else 1
            print(f"probe kallglot: {'ok (key accepted)' if ok else 'FAILED: ' + exc.reason}")
    finally:
        await client.aclose()
    return 1 if failed else 0


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
