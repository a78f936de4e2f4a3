"""Sandbox test fixtures: apps served on loopback for the test's duration, a sandbox, a webhook sink."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import pytest
import uvicorn
from starlette.types import ASGIApp

from receiver.sandbox import DEV_API_KEY, Sandbox, SandboxConfig

from .support import Running, WebhookSink, fast_config, plain_client, start_server, stop_server


@pytest.fixture
async def run_app() -> AsyncIterator[Callable[[ASGIApp], Awaitable[str]]]:
    """Start any number of apps for the test; all stop together at its end (each stop takes 0.1 s)."""
    servers: list[uvicorn.Server] = []

    async def start(app: ASGIApp) -> str:
        server, url = await start_server(app)
        servers.append(server)
        return url

    yield start
    await asyncio.gather(*(stop_server(server) for server in servers))


@pytest.fixture
async def launch(
    run_app: Callable[[ASGIApp], Awaitable[str]],
) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    """Serve a Sandbox (run standalone, so its own lifespan starts the dispatcher) and give a client."""
    async with AsyncExitStack() as stack:

        async def start(
            config: SandboxConfig | None = None, clock: Callable[[], float] = time.time
        ) -> Running:
            sandbox = Sandbox(config if config is not None else fast_config(), clock=clock)
            url = await run_app(sandbox.app)
            client = plain_client(url, {"Authorization": f"Bearer {DEV_API_KEY}"})
            await stack.enter_async_context(client)
            return Running(sandbox, url, client)

        yield start


@pytest.fixture
async def sink(run_app: Callable[[ASGIApp], Awaitable[str]]) -> tuple[WebhookSink, str]:
    hooks = WebhookSink()
    url = await run_app(hooks.app)
    return hooks, f"{url}/hook"
