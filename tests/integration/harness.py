"""A receiver and a sandbox as real servers on loopback, in the test's event loop, plus a webhook sink.

``Stack`` wires them like production: the receiver calls the sandbox's API over HTTP, and the
sandbox sends signed webhooks to the receiver over HTTP. Tests drive it only through HTTP.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.commands.send import build_event
from receiver.listeners import Address, bind, make_server
from receiver.sandbox import DEV_API_KEY, DEV_WEBHOOK_SECRET, Sandbox, SandboxConfig
from receiver.settings import load_settings
from receiver.signing import sign_kallglot, sign_standard_webhooks
from tests.sandbox.support import stop_server  # noqa: F401 (re-exported for the integration tests)

INBOUND_SECRET = "whsec_dGVzdC1pbmJvdW5kLXNlY3JldC0xMjM0NQ=="
SINK_SECRET = "whsec_c2luay1zZWNyZXQtZm9yLXRlc3RzLTEyMzQ1"
ADMIN_TOKEN = "test-admin-token"


def collect_abandoned_sockets() -> None:
    """Collect, now and quietly, the client sockets of requests cancelled at a test's teardown.

    Stopping a stack cancels requests in flight (the sandbox's webhook attempts, the receiver's
    Kallglot calls); a connection whose request was cancelled mid-flight may be left for the garbage
    collector to close, and Python then reports an unclosed socket. Collected later, that report
    would fail whichever test happens to be running, so each stack's teardown collects its own.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


async def start_server(app: Any, *, lifespan: str = "on") -> tuple[uvicorn.Server, str]:
    """Run ``app`` (lifespan included) on a free loopback port; return the server and its URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan=lifespan, ws="none")
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    if server.should_exit:
        raise RuntimeError("the server failed to start")
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def start_listener(
    app: Any, settings: Any, *, lifespan: Literal["on", "off"] = "on"
) -> tuple[uvicorn.Server, str]:
    """Run one of the receiver's listeners as ``serve`` does (slow-client guards included), on a
    free loopback port; ``stop_server`` stops it."""
    sock = bind(Address("127.0.0.1", 0, "RECEIVER_PORT"))
    server = make_server(app, settings, lifespan=lifespan)
    await server.startup(sockets=[sock])
    if server.should_exit:
        raise RuntimeError("the server failed to start")
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}"


async def wait_for(condition: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``condition`` (sync or async) until truthy; raise AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def build_kallglot_body(event: str, session_id: str, *, event_id: str | None = None) -> bytes:
    payload = build_event(event, session_id, None, time.time())
    if event_id:
        payload["id"] = event_id
    return json.dumps(payload).encode()


def sign_kallglot_headers(body: bytes, secret: str = DEV_WEBHOOK_SECRET) -> dict[str, str]:
    return {"Kallglot-Signature": sign_kallglot(secret, int(time.time()), body)}


@dataclass
class Sink:
    """A destination for the ``webhook`` handler: records what it gets, fails on demand."""

    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    fail_with: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    attempts: int = 0

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.attempts += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail_with is not None:
                headers = {"Retry-After": self.retry_after} if self.retry_after else None
                return JSONResponse({"error": "down"}, status_code=self.fail_with, headers=headers)
            self.received.append(json.loads(await request.body()))
            self.headers.append(dict(request.headers))
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def ids(self) -> list[str]:
        return [doc["session_id"] for doc in self.received]


@dataclass
class Stack:
    sandbox: Sandbox
    sandbox_url: str
    url: str  # the public listener: inbound webhooks and health
    admin_url: str  # the admin listener: /metrics, /admin/*, /openapi.json, health
    app: Any
    sink: Sink
    files: Path
    http: httpx.AsyncClient

    def stats(self) -> dict[str, Any]:
        return self.sandbox.stats()

    def charged(self, session_id: str) -> int:
        return int(self.stats()["charged_by_session"].get(session_id, 0))

    async def session_ended(
        self, session_id: str, *, event_id: str | None = None, event: str = "session.ended"
    ) -> httpx.Response:
        payload = build_event(event, session_id, None, time.time())
        if event_id:
            payload["id"] = event_id
        body = json.dumps(payload).encode()
        return await self.post_kallglot(body)

    async def post_kallglot(
        self, body: bytes, *, secret: str = DEV_WEBHOOK_SECRET, ts: int | None = None
    ) -> httpx.Response:
        signature = sign_kallglot(secret, ts if ts is not None else int(time.time()), body)
        return await self.http.post(
            f"{self.url}/webhooks/kallglot", content=body, headers={"Kallglot-Signature": signature}
        )

    async def call_ended(
        self, session_id: str, *, msg_id: str | None = None, **fields: Any
    ) -> httpx.Response:
        body = json.dumps({"session_id": session_id, **fields}).encode()
        headers = sign_standard_webhooks(
            INBOUND_SECRET, msg_id or f"msg_{uuid.uuid4().hex}", int(time.time()), body
        )
        return await self.http.post(f"{self.url}/events/call-ended", content=body, headers=headers)

    async def call(self, session_id: str) -> dict[str, Any] | None:
        response = await self.http.get(
            f"{self.admin_url}/admin/calls/{session_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        return response.json() if response.status_code == 200 else None

    async def state(self, session_id: str) -> str | None:
        view = await self.call(session_id)
        return view["state"] if view else None

    async def wait_state(self, session_id: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            view = await self.call(session_id)
            return view if view and view["state"] == state else None

        result: dict[str, Any] = await wait_for(reached, timeout=timeout, what=f"{session_id} to be {state}")
        return result

    def delivered_files(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.files.glob("*.json"))]

    async def metrics(self) -> str:
        return (await self.http.get(f"{self.admin_url}/metrics")).text


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        found = dict(part.split("=", 1) for part in label_text.rstrip("}").split(",") if "=" in part)
        found = {key: raw.strip('"') for key, raw in found.items()}
        if all(found.get(key) == wanted for key, wanted in labels.items()):
            return float(value)
    return 0.0


def receiver_settings(sandbox_url: str, database: str, sink_url: str, files: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "kallglot_api_url": f"{sandbox_url}/v1",
        "kallglot_api_key": DEV_API_KEY,
        "kallglot_webhook_secrets": DEV_WEBHOOK_SECRET,
        "database_url": database,
        "inbound_secrets": INBOUND_SECRET,
        "admin_token": ADMIN_TOKEN,
        "poll_after_seconds": 0.5,
        "handlers": [
            {"name": "files", "type": "file", "path": f"{files}/"},
            {
                "name": "sink",
                "type": "webhook",
                "url": f"{sink_url}/hook",
                "secret": SINK_SECRET,
                "retry": {"initial_seconds": 0.05, "max_seconds": 0.2, "horizon_seconds": 30},
                "circuit": {"failure_threshold": 3, "open_seconds": 0.3},
            },
        ],
        "log_level": "WARNING",
        "shutdown_grace_seconds": 2,
    }
    values.update(overrides)
    return load_settings(**values)


def sandbox_config(**overrides: Any) -> SandboxConfig:
    base: dict[str, Any] = {
        "analysis_latency_seconds": 0.05,
        "webhook_retry_scale": 0.001,
        "webhook_timeout_seconds": 5,
        "rate_limit": 100000,
        "credits": 100000,
        "seed": 7,
    }
    base.update(overrides)
    return SandboxConfig(**base)
