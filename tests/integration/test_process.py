"""The real ``kallglot-receiver serve`` process: SIGKILL mid-flight then restart, SIGTERM drains."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from receiver.sandbox import DEV_API_KEY, DEV_WEBHOOK_SECRET, Sandbox
from tests.integration.harness import (
    ADMIN_TOKEN,
    Sink,
    build_kallglot_body,
    collect_abandoned_sockets,
    sandbox_config,
    sign_kallglot_headers,
    start_server,
    stop_server,
    wait_for,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """``kallglot-receiver serve`` as a child process on a free port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_port = _free_port()
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "receiver",
                    "serve",
                    "--port",
                    str(self.port),
                    "--admin-port",
                    str(self.admin_port),
                ],
                env=self.env,
                stdout=out,
                stderr=out,
            )
        async with httpx.AsyncClient() as client:

            async def ready() -> bool:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"receiver exited: {self.log.read_text()[-2000:]}")
                try:
                    public = await client.get(f"{self.url}/readyz")
                    admin = await client.get(f"{self.admin_url}/readyz")
                    return public.status_code == admin.status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(ready, timeout=60, what="the receiver to be ready")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    sink = Sink()
    sink_server, sink_url = await start_server(sink.app())
    box = Sandbox(sandbox_config(analysis_latency_seconds=0.3))
    box_server, box_url = await start_server(box.app)
    env = {
        **os.environ,
        "KALLGLOT_API_URL": f"{box_url}/v1",
        "KALLGLOT_API_KEY": DEV_API_KEY,
        "KALLGLOT_WEBHOOK_SECRETS": DEV_WEBHOOK_SECRET,
        "RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/receiver.db",
        "RECEIVER_ADMIN_TOKEN": ADMIN_TOKEN,
        "RECEIVER_POLL_AFTER_SECONDS": "1",
        "RECEIVER_LOG_LEVEL": "WARNING",
        "RECEIVER_SHUTDOWN_GRACE_SECONDS": "10",
        "RECEIVER_HANDLERS": json.dumps(
            [
                {
                    "name": "sink",
                    "type": "webhook",
                    "url": f"{sink_url}/hook",
                    "retry": {"initial_seconds": 0.1, "max_seconds": 0.5},
                }
            ]
        ),
    }
    env.pop("RECEIVER_CONFIG_FILE", None)
    receiver = Receiver(env, tmp_path / "receiver.log")
    try:
        yield {"sink": sink, "sandbox": box, "receiver": receiver}
    finally:
        if receiver.process is not None and receiver.process.poll() is None:
            receiver.process.kill()
            receiver.process.wait()
        await stop_server(box_server)
        await stop_server(sink_server)
        collect_abandoned_sockets()


async def _send(client: httpx.AsyncClient, url: str, session_id: str) -> int:
    body = build_kallglot_body("session.ended", session_id)
    response = await client.post(
        f"{url}/webhooks/kallglot", content=body, headers=sign_kallglot_headers(body)
    )
    return response.status_code


async def test_sigkill_mid_flight_then_restart_completes_every_call_with_one_credit(
    world: dict[str, Any],
) -> None:
    receiver: Receiver = world["receiver"]
    box: Sandbox = world["sandbox"]
    sink: Sink = world["sink"]
    box.update_config({"webhook_url": f"{receiver.url}/webhooks/kallglot", "response_delay_seconds": 0.05})
    await receiver.start()
    sessions = [f"sess_kill{i}" for i in range(60)]

    async with httpx.AsyncClient(timeout=10) as client:
        codes = await asyncio.gather(*(_send(client, receiver.url, s) for s in sessions))
    assert codes == [200] * len(sessions)
    await wait_for(lambda: box.stats()["analyses_created"] >= 10, what="some analyses to start")
    receiver.signal(signal.SIGKILL)
    receiver.wait(10)
    killed_at = box.stats()["analyses_created"]

    await receiver.start()
    await wait_for(lambda: set(sink.ids()) == set(sessions), timeout=60, what="every call to be delivered")

    charged = box.stats()["charged_by_session"]
    assert all(charged[s] == 1 for s in sessions), {
        s: charged.get(s) for s in sessions if charged.get(s) != 1
    }
    assert killed_at < len(sessions), "the kill should have happened mid-flight"
    # At-least-once: only a delivery in flight at the kill may arrive twice.
    assert len(sink.received) - len(sessions) <= 8


# The in-process sandbox's webhook client may hold a keep-alive connection to the receiver we stop;
# when the garbage collector finds it, Python reports an unclosed socket in THIS process, not in the
# receiver under test: that report must not decide the test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_sigterm_drains_in_flight_work_and_exits_zero(world: dict[str, Any]) -> None:
    receiver: Receiver = world["receiver"]
    box: Sandbox = world["sandbox"]
    sink: Sink = world["sink"]
    box.update_config({"webhook_url": f"{receiver.url}/webhooks/kallglot"})
    sink.delay = 1.5
    receiver.env["RECEIVER_LOG_LEVEL"] = "INFO"
    await receiver.start()

    async with httpx.AsyncClient(timeout=10) as client:
        assert await _send(client, receiver.url, "sess_drain1") == 200
    await wait_for(lambda: sink.attempts >= 1, timeout=40, what="the delivery to be in flight")
    started = time.monotonic()
    receiver.signal(signal.SIGTERM)
    code = await asyncio.to_thread(receiver.wait, 40)

    assert code == 0
    assert time.monotonic() - started < 30  # the grace period (10 s) plus slack for a loaded machine
    assert sink.ids() == ["sess_drain1"]
    log = receiver.log.read_text()
    assert '"event": "receiver.stopped"' in log
    assert DEV_WEBHOOK_SECRET not in log


async def test_sigterm_gives_back_a_delivery_that_outlasts_the_grace_period(
    world: dict[str, Any], tmp_path: Path
) -> None:
    receiver: Receiver = world["receiver"]
    box: Sandbox = world["sandbox"]
    sink: Sink = world["sink"]
    box.update_config({"webhook_url": f"{receiver.url}/webhooks/kallglot"})
    sink.delay = 60
    receiver.env["RECEIVER_SHUTDOWN_GRACE_SECONDS"] = "1"
    await receiver.start()

    async with httpx.AsyncClient(timeout=10) as client:
        assert await _send(client, receiver.url, "sess_cut1") == 200
    await wait_for(lambda: sink.attempts >= 1, timeout=40, what="the delivery to be in flight")
    receiver.signal(signal.SIGTERM)
    code = await asyncio.to_thread(receiver.wait, 40)

    assert code == 0

    with sqlite3.connect(tmp_path / "receiver.db") as db:
        rows = db.execute("SELECT state, lease_owner, attempts FROM deliveries").fetchall()
    assert rows == [("pending", None, 0)]


async def test_sigterm_bounds_the_whole_shutdown_by_the_grace_period(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """A slow in-flight request and a slow in-flight delivery share ONE deadline: grace, not 2 x grace."""
    receiver: Receiver = world["receiver"]
    box: Sandbox = world["sandbox"]
    sink: Sink = world["sink"]
    box.update_config({"webhook_url": f"{receiver.url}/webhooks/kallglot"})
    sink.delay = 60
    grace = 3.0
    receiver.env["RECEIVER_SHUTDOWN_GRACE_SECONDS"] = str(grace)
    receiver.env["RECEIVER_BODY_TIMEOUT_SECONDS"] = "30"
    await receiver.start()

    async with httpx.AsyncClient(timeout=10) as client:
        assert await _send(client, receiver.url, "sess_bound1") == 200
    await wait_for(lambda: sink.attempts >= 1, timeout=40, what="the delivery to be in flight")
    # A request still in flight at the signal: its body arrives slowly, well past the grace period.
    _, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
    writer.write(b"POST /webhooks/kallglot HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()
    # Deliberate: let the server start the request; no listener metric shows a request whose body is
    # still on its way, so there is nothing to wait on from outside.
    await asyncio.sleep(0.3)
    started = time.monotonic()
    receiver.signal(signal.SIGTERM)
    code = await asyncio.to_thread(receiver.wait, 40)
    elapsed = time.monotonic() - started
    writer.close()
    await writer.wait_closed()

    assert code == 0
    assert elapsed < grace + 1.5, f"shutdown took {elapsed:.1f}s with a grace of {grace}s"
    with sqlite3.connect(tmp_path / "receiver.db") as db:
        rows = db.execute("SELECT state, lease_owner, attempts FROM deliveries").fetchall()
    assert rows == [("pending", None, 0)], "the delivery cut short is given back"


async def test_the_public_and_admin_listeners_serve_separate_endpoints(world: dict[str, Any]) -> None:
    receiver: Receiver = world["receiver"]
    await receiver.start()
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async with httpx.AsyncClient(timeout=10) as client:
        public = {
            path: (await client.get(f"{receiver.url}{path}", headers=auth)).status_code
            for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/admin/calls/sess_x")
        }
        admin = {
            path: (await client.get(f"{receiver.admin_url}{path}", headers=auth)).status_code
            for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/admin/calls/sess_x")
        }
        webhook_on_admin = await client.post(f"{receiver.admin_url}/webhooks/kallglot", content=b"{}")
        webhook_on_public = await client.post(f"{receiver.url}/webhooks/kallglot", content=b"{}")

    assert public == {
        "/healthz": 200,
        "/readyz": 200,
        "/metrics": 404,
        "/openapi.json": 404,
        "/admin/calls/sess_x": 404,
    }
    assert admin == {
        "/healthz": 200,
        "/readyz": 200,
        "/metrics": 200,
        "/openapi.json": 200,
        "/admin/calls/sess_x": 404,
    }
    assert webhook_on_admin.status_code == 404
    assert webhook_on_admin.json()["error"]["code"] == "not_found"
    assert webhook_on_public.status_code == 401
