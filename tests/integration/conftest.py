"""Fixtures: a running receiver + sandbox + webhook sink, configurable per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from receiver.app import admin_app, create_app
from receiver.sandbox import Sandbox
from tests.integration.harness import (
    Sink,
    Stack,
    collect_abandoned_sockets,
    receiver_settings,
    sandbox_config,
    start_listener,
    start_server,
    stop_server,
)
from tests.pg import pg_database, postgres_cluster, postgres_template, postgres_url  # noqa: F401

StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every end-to-end test runs on both stores: SQLite in a file, PostgreSQL in a fresh database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/receiver.db"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture
async def make_stack(tmp_path: Path, database: str) -> AsyncIterator[StackFactory]:
    """``await make_stack(sandbox={knobs}, receiver={settings})``: everything stops at the test's end."""
    async with AsyncExitStack() as exits:
        exits.callback(collect_abandoned_sockets)  # last, once every server has stopped

        async def make(sandbox: dict[str, Any] | None = None, **receiver: Any) -> Stack:
            sink = Sink()
            sink_server, sink_url = await start_server(sink.app())
            exits.push_async_callback(stop_server, sink_server)
            box = Sandbox(sandbox_config(**(sandbox or {})))
            box_server, box_url = await start_server(box.app)
            exits.push_async_callback(stop_server, box_server)
            files = tmp_path / "deliveries"
            settings = receiver_settings(box_url, database, sink_url, files, **receiver)
            app = create_app(settings, worker_tick=0.05, pause_seconds=(0.3, 1.0))
            server, url = await start_listener(app, settings)
            exits.push_async_callback(stop_server, server)
            admin_server, admin_url = await start_listener(admin_app(app), settings, lifespan="off")
            exits.push_async_callback(stop_server, admin_server)
            box.update_config({"webhook_url": f"{url}/webhooks/kallglot"})
            http = httpx.AsyncClient(timeout=10)
            exits.push_async_callback(http.aclose)
            return Stack(box, box_url, url, admin_url, app, sink, files, http)

        yield make


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()
