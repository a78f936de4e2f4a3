"""Slow and surplus clients: deadlines for a request's headers and body, and a connection cap.

uvicorn closes an idle keep-alive connection, but any byte resets that timer, so a client that
dribbles one byte every few seconds could hold a connection (and up to RECEIVER_MAX_BODY_BYTES of
buffer) forever. Three guards, one per phase of a request:

- headers: ``guarded_protocol`` arms a timer when a connection opens and after every response; if
  no new request's headers are complete when it fires, the client gets a JSON 408 and is closed
  (uvicorn, h11 and httptools offer no header timeout);
- body: ``BodyDeadline`` bounds the time from the end of the headers to the end of the body; the
  route answers a JSON 408 (``BodyTimeout``) and closes the connection;
- connections: beyond RECEIVER_MAX_CONNECTIONS per listener a new connection gets a JSON 503 and
  is closed at once, before it can hold anything.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTimeout(Exception):
    """The request body did not arrive within RECEIVER_BODY_TIMEOUT_SECONDS (answered 408)."""


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
TOO_MANY_CONNECTIONS = raw_response(
    503, "Service Unavailable", "too_many_connections", "too many open connections; retry later"
)


class BodyDeadline:
    """ASGI middleware: a request body must be complete ``seconds`` after its headers."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:  # after the body, receive() only waits for a disconnect: no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, timed_receive, send)


def guarded_protocol(base: type[asyncio.Protocol], *, headers_timeout: float, max_connections: int) -> type:
    """A subclass of uvicorn's HTTP protocol ``base`` with the header deadline and connection cap."""

    class Guarded(base):  # type: ignore[valid-type,misc]
        _header_timer: asyncio.TimerHandle | None = None
        _armed_for: Any = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.write(TOO_MANY_CONNECTIONS)
                transport.close()
                return
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._armed_for = self.cycle
            self._header_timer = self.loop.call_later(headers_timeout, self._headers_overdue)

        def _headers_overdue(self) -> None:
            self._header_timer = None
            cycle = self.cycle
            waiting = cycle is self._armed_for and (cycle is None or cycle.response_complete)
            if waiting and not self.transport.is_closing():
                self.transport.write(HEADERS_TIMEOUT)
                self.transport.close()

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded
