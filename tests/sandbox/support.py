"""Sandbox test helpers: real servers on free loopback ports, a webhook sink, a fake clock, polling."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from receiver.sandbox import Sandbox, SandboxConfig


async def start_server(app: ASGIApp) -> tuple[uvicorn.Server, str]:
    """Start ``app`` with uvicorn on a free loopback port in this event loop; return it and its URL.

    Drives ``startup``/``shutdown`` directly rather than ``serve()``: its main loop ticks every
    100 ms and installs signal handlers, neither of which a test wants.
    """
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="auto", ws="none")
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def wait_for(condition: Callable[[], object], *, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def stop_server(server: uvicorn.Server) -> None:
    """``Server.shutdown`` without its fixed 100 ms grace sleep: stop listening, close idle
    connections, let in-flight requests finish (bounded), then run the app's lifespan shutdown."""
    for listener in server.servers:
        listener.close()
    for connection in list(server.server_state.connections):
        connection.shutdown()
    deadline = time.monotonic() + 5
    while server.server_state.tasks and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    await server.lifespan.shutdown()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class WebhookSink:
    """A receiving endpoint that answers ``statuses`` in turn (then 200), after ``delays`` if any,
    and records every request."""

    statuses: list[int] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])

    async def _hook(self, request: Request) -> JSONResponse:
        self.received.append(Received(dict(request.headers), await request.body()))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delays:
                await asyncio.sleep(self.delays.pop(0))  # plays a slow endpoint; no test waits on it
        finally:
            self.in_flight -= 1
        status = self.statuses.pop(0) if self.statuses else 200
        return JSONResponse({"ok": status < 300}, status)

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        return [r.event for r in self.received if type_ is None or r.event["type"] == type_]


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: float = 1_774_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fast_config(**knobs: Any) -> SandboxConfig:
    """Knobs for tests: instant analyses and a retry schedule in milliseconds."""
    base: dict[str, Any] = {"analysis_latency_seconds": 0.0, "webhook_retry_scale": 0.0001, "seed": 7}
    return SandboxConfig.model_validate(base | knobs)


def plain_client(url: str, headers: dict[str, str]) -> httpx.AsyncClient:
    """A client for loopback http: skipping TLS setup saves ~40 ms per client."""
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=10, verify=False)  # noqa: S501


@dataclass
class Running:
    sandbox: Sandbox
    url: str
    client: httpx.AsyncClient

    async def stats(self) -> dict[str, Any]:
        response = await self.client.get("/_sandbox/stats")
        result: dict[str, Any] = response.json()
        return result
