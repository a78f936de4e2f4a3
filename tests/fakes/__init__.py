"""Fakes of remote services: real Starlette apps served by uvicorn on a free loopback port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn


@asynccontextmanager
async def serve(app: Any, *, startup_timeout: float = 5.0) -> AsyncIterator[str]:
    """Run ``app`` on 127.0.0.1 (port chosen by the OS) for the block; yields its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws="none", http="h11"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("fake server stopped before it started")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError("fake server did not start in time")
        await asyncio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=startup_timeout)


class Switchboard:
    """An ASGI app that forwards to whichever app is plugged in: one server, a fresh fake per test."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.app is None:
            raise RuntimeError("no fake plugged into the switchboard")
        await self.app(scope, receive, send)
