"""Slow and surplus clients: deadlines for a request's headers and body, and a connection cap.

uvicorn closes an idle keep-alive connection, but any byte resets that timer, so a client that
dribbles one byte every few seconds could hold a connection (and up to RECEIVER_MAX_BODY_BYTES of
buffer) forever. ``guarded_protocol`` wraps uvicorn's HTTP protocol (httptools or h11) with:

- a headers deadline: a request's headers must be complete ``timeout`` seconds after the
  connection opened or after the previous response;
- a body deadline: its body must be complete ``timeout`` seconds after its headers;
- a connection cap: beyond RECEIVER_MAX_CONNECTIONS per listener a new connection gets a JSON 503
  and is closed at once, before it can hold anything.

A connection past a deadline gets a JSON 408 (unless its response has started) and is closed; the
route still reading its body sees a disconnect. The deadlines cost nothing per request: each
connection keeps its deadline as a number, and one sweep per listener checks them every
``timeout / 4`` seconds (at most 1 s) while connections are open, so a deadline is enforced at
most that much late. (A timer per request cost about a tenth of the ingest rate.)

Both refusals close the way Apache and nginx do (a lingering close): the answer is followed by a
FIN, and what the client still sends is read and dropped until it closes or LINGER_SECONDS pass.
Closing a socket that then receives data makes the kernel reset the connection, and a reset can
discard the answer before the client reads it. At most RECEIVER_MAX_CONNECTIONS connections linger
per listener; beyond that a refused connection is closed at once, so a flood of connections
cannot hold more than twice the cap of file descriptors.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


def raw_response(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 error response with the JSON error body, for writing to a bare transport."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


HEADERS_TIMEOUT = raw_response(
    408, "Request Timeout", "request_timeout", "the request headers did not arrive in time"
)
BODY_TIMEOUT = raw_response(
    408, "Request Timeout", "request_timeout", "the request body did not arrive in time"
)
TOO_MANY_CONNECTIONS = raw_response(
    503, "Service Unavailable", "too_many_connections", "too many open connections; retry later"
)

LINGER_SECONDS = 2.0


def guarded_protocol(base: type[asyncio.Protocol], *, timeout: float, max_connections: int) -> type:
    """A subclass of uvicorn's HTTP protocol ``base`` with the two deadlines and the connection cap
    (one class per listener: its sweep watches that listener's connections)."""
    every = min(1.0, timeout / 4)
    lingering: set[Any] = set()  # refused connections reading until the client closes
    sweep: asyncio.TimerHandle | None = None
    sweep_loop: asyncio.AbstractEventLoop | None = None

    def watch(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        nonlocal sweep, sweep_loop
        if sweep is None or sweep_loop is not loop:
            sweep_loop = loop
            sweep = loop.call_later(every, run_sweep, loop, connections)

    def run_sweep(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        nonlocal sweep
        now = loop.time()
        for connection in list(connections):
            answer = connection.overdue(now) if isinstance(connection, Guarded) else None
            if answer is not None and not connection.transport.is_closing():
                connection.refuse(answer)
        sweep = loop.call_later(every, run_sweep, loop, connections) if connections else None

    class Guarded(base):  # type: ignore[valid-type,misc]
        _headers_by: float = float("inf")  # the current wait for a request's headers ends then
        _body_by: float = float("inf")  # the current request's body must be complete by then
        _cycle_seen: Any = None
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self.refuse(TOO_MANY_CONNECTIONS)
                return
            self._headers_by = self.loop.time() + timeout
            watch(self.loop, self.connections)

        def refuse(self, answer: bytes) -> None:
            """Answer and close, lingering: see the module's docstring. A refused connection no
            longer counts against the cap, and the route reading its body sees a disconnect now."""
            self._refused = True
            self.connections.discard(self)
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
            transport = self.transport
            transport.write(answer)
            if not transport.can_write_eof() or len(lingering) >= max_connections:
                transport.close()
                return
            lingering.add(self)
            transport.write_eof()
            transport.resume_reading()  # uvicorn may have paused it; unread bytes would reset
            self.loop.call_later(LINGER_SECONDS, transport.close)

        def connection_lost(self, exc: Exception | None) -> None:
            lingering.discard(self)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:  # lingering: dropped unread
                return
            super().data_received(data)
            if self.cycle is not self._cycle_seen:  # a new request's headers are complete
                self._cycle_seen = self.cycle
                self._body_by = self.loop.time() + timeout

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._headers_by = self.loop.time() + timeout

        def overdue(self, now: float) -> bytes | None:
            """The answer for a connection past its deadline at ``now``; None while it is on time."""
            cycle = self.cycle
            if cycle is None or cycle.response_complete:  # waiting for the next request's headers
                return HEADERS_TIMEOUT if now >= self._headers_by else None
            if cycle.more_body and not cycle.response_started and now >= self._body_by:
                return BODY_TIMEOUT
            return None

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded
