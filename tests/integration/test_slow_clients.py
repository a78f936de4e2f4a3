"""Slow and surplus clients (issue 8 hole 5), with real sockets that dribble bytes at a live listener."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol

from receiver.app import admin_app
from receiver.listeners import Address, bind, make_server
from receiver.settings import load_settings
from tests.integration.conftest import StackFactory
from tests.integration.harness import stop_server, wait_for

DEADLINE = 1.0  # RECEIVER_BODY_TIMEOUT_SECONDS in these tests
SLACK = 2.0  # a loaded CI machine


@pytest.fixture
def database(tmp_path: Path) -> str:
    """Nothing here is stored: one store is enough."""
    return f"sqlite:///{tmp_path}/receiver.db"


class Client:
    """A raw TCP client on a listener: writes what it is told, reads until the server closes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.dribbler: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str) -> Client:
        host, port = url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def dribble(self, data: bytes, every: float = 0.2) -> None:
        """One byte every ``every`` seconds, as the attack of hole 5 did (there one every 5 s)."""

        async def run() -> None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                for byte in data:
                    await self.send(bytes([byte]))
                    await asyncio.sleep(every)

        self.dribbler = asyncio.create_task(run())

    async def read_until_closed(self, timeout: float) -> bytes:
        async with asyncio.timeout(timeout):
            data = await self.reader.read()
        return data

    async def close(self) -> None:
        if self.dribbler is not None:
            self.dribbler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.dribbler
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def _response(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


REQUEST_HEAD = b"POST /webhooks/kallglot HTTP/1.1\r\nHost: receiver\r\nContent-Type: application/json\r\n"


async def _timed_out(client: Client) -> float:
    started = time.monotonic()
    raw = await client.read_until_closed(DEADLINE + SLACK + 1)
    elapsed = time.monotonic() - started
    status, body = _response(raw)
    assert status == 408
    assert body["error"]["code"] == "request_timeout"  # type: ignore[index]
    return elapsed


async def test_a_body_dribbled_byte_by_byte_gets_408_and_is_closed_within_the_deadline(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(body_timeout_seconds=DEADLINE)
    client = await Client.open(stack.url)
    await client.send(REQUEST_HEAD + b"Content-Length: 200\r\n\r\n")
    client.dribble(b"x" * 200)

    elapsed = await _timed_out(client)

    await client.close()
    assert elapsed < DEADLINE + SLACK


@pytest.mark.parametrize("listener", ["public", "admin"])
async def test_headers_dribbled_byte_by_byte_get_408_and_are_closed_within_the_deadline(
    make_stack: StackFactory, listener: str
) -> None:
    stack = await make_stack(body_timeout_seconds=DEADLINE)
    client = await Client.open(stack.url if listener == "public" else stack.admin_url)
    client.dribble(b"GET /healthz HTTP/1.1\r\nHost: receiver\r\nX-Slow: " + b"a" * 200)

    elapsed = await _timed_out(client)

    await client.close()
    assert elapsed < DEADLINE + SLACK


@pytest.mark.parametrize("surplus", [False, True], ids=["408", "503"])
async def test_an_answer_survives_a_client_that_keeps_sending_after_it(
    make_stack: StackFactory, surplus: bool
) -> None:
    """The refused client is still writing when its answer goes out. Closing a socket that then
    receives data makes the kernel reset the connection, and the reset can discard the answer
    before the client reads it: the CI flake of stop 15. The close lingers instead."""
    stack = await make_stack(body_timeout_seconds=DEADLINE, max_connections=1 if surplus else 100)
    held = await Client.open(stack.url) if surplus else None
    if held is not None:  # the one admitted connection, seen by the listener
        await held.send(b"GET /healthz HTTP/1.1\r\nHost: receiver\r\n\r\n")
        await held.reader.readuntil(b'{"status":"ok"}')
    client = await Client.open(stack.url)
    client.dribble(b"GET /healthz HTTP/1.1\r\nHost: receiver\r\nX-Slow: " + b"a" * 400, every=0.005)
    await asyncio.sleep(0.5 if surplus else DEADLINE + 1.0)  # the answer is sent and more bytes follow it

    raw = await client.read_until_closed(SLACK + 1)

    status, body = _response(raw)
    assert status == (503 if surplus else 408)
    assert body["error"]["code"] == ("too_many_connections" if surplus else "request_timeout")  # type: ignore[index]
    await client.close()
    if held is not None:
        await held.close()


async def _writes_fail_within(client: Client, seconds: float) -> bool:
    """Whether writing to ``client`` fails (the server closed it for good) within ``seconds``."""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            await client.send(b"x" * 64)
            await asyncio.sleep(0.02)
    except (ConnectionError, RuntimeError):
        return True
    return False


async def test_refused_connections_linger_only_up_to_the_connection_cap(make_stack: StackFactory) -> None:
    """Lingering holds a descriptor for up to 2 s: a flood of refused connections must not hold
    more than the cap, so beyond it a refused connection is closed at once."""
    stack = await make_stack(max_connections=1, body_timeout_seconds=30)
    held = await Client.open(stack.url)
    await held.send(b"GET /healthz HTTP/1.1\r\nHost: receiver\r\n\r\n")
    await held.reader.readuntil(b'{"status":"ok"}')
    first = await Client.open(stack.url)
    await first.reader.readuntil(b"too_many_connections")  # refused, and now lingering
    second = await Client.open(stack.url)
    await second.reader.readuntil(b"too_many_connections")  # refused beyond the lingering cap

    first_failed, second_failed = await asyncio.gather(
        _writes_fail_within(first, 1.0), _writes_fail_within(second, 1.0)
    )

    assert not first_failed  # still read (and dropped) by the server
    assert second_failed  # closed at once: the kernel resets what follows
    for client in (held, first, second):
        await client.close()


async def test_a_connection_that_sends_nothing_is_closed_within_the_deadline(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(body_timeout_seconds=DEADLINE)
    client = await Client.open(stack.url)

    elapsed = await _timed_out(client)

    await client.close()
    assert elapsed < DEADLINE + SLACK


async def test_the_next_request_on_a_kept_alive_connection_has_the_same_header_deadline(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(body_timeout_seconds=DEADLINE)
    client = await Client.open(stack.url)
    await client.send(b"GET /healthz HTTP/1.1\r\nHost: receiver\r\n\r\n")
    first = await client.reader.readuntil(b'{"status":"ok"}')
    assert first.startswith(b"HTTP/1.1 200")
    client.dribble(b"GET /healthz HTTP/1.1\r\nHost: receiver\r\nX-Slow: " + b"a" * 200)

    await _timed_out(client)

    await client.close()


async def test_slow_clients_do_not_hold_the_service(make_stack: StackFactory) -> None:
    stack = await make_stack(body_timeout_seconds=DEADLINE)
    slow = [await Client.open(stack.url) for _ in range(4)]
    for client in slow:
        await client.send(REQUEST_HEAD + b"Content-Length: 1000\r\n\r\n")
        client.dribble(b"x" * 1000)

    answered = await stack.session_ended("sess_beside_slow1")
    closed = await asyncio.gather(*(client.read_until_closed(DEADLINE + SLACK + 1) for client in slow))

    assert answered.status_code == 200
    assert all(raw.startswith(b"HTTP/1.1 408") for raw in closed)
    for client in slow:
        await client.close()


async def test_beyond_max_connections_a_new_connection_gets_a_json_503(make_stack: StackFactory) -> None:
    stack = await make_stack(max_connections=3, body_timeout_seconds=30)
    held = [await Client.open(stack.url) for _ in range(3)]
    for client in held:  # each is open and served: the listener has seen it
        await client.send(b"GET /healthz HTTP/1.1\r\nHost: receiver\r\n\r\n")
        await client.reader.readuntil(b'{"status":"ok"}')

    surplus = await Client.open(stack.url)
    raw = await surplus.read_until_closed(5)
    await surplus.close()
    await held[0].close()

    async def admitted() -> bool:
        client = await Client.open(stack.url)
        try:
            await client.send(b"GET /healthz HTTP/1.1\r\nHost: receiver\r\nConnection: close\r\n\r\n")
            return (await client.read_until_closed(5)).startswith(b"HTTP/1.1 200")
        finally:
            await client.close()

    status, body = _response(raw)
    assert status == 503
    assert body["error"]["code"] == "too_many_connections"  # type: ignore[index]
    await wait_for(admitted, what="a connection to be admitted once one was closed")
    for client in held[1:]:
        await client.close()


async def test_the_guards_also_work_with_the_pure_python_h11_protocol(make_stack: StackFactory) -> None:
    """uvicorn falls back to h11 where httptools is not installed: the same deadline holds."""
    stack = await make_stack(body_timeout_seconds=DEADLINE)
    settings = load_settings(body_timeout_seconds=DEADLINE)
    server = make_server(admin_app(stack.app), settings, protocol=H11Protocol)
    sock = bind(Address("127.0.0.1", 0, "RECEIVER_ADMIN_PORT"))
    await server.startup(sockets=[sock])
    try:
        client = await Client.open(f"http://127.0.0.1:{sock.getsockname()[1]}")
        client.dribble(b"GET /healthz HTTP/1.1\r\nHost: receiver\r\nX-Slow: " + b"a" * 200)
        elapsed = await _timed_out(client)
        await client.close()
    finally:
        await stop_server(server)

    assert elapsed < DEADLINE + SLACK
