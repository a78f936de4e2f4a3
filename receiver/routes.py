"""HTTP endpoints: raw body -> verify -> parse -> intake; the error-to-status mapping lives here.

No input from the network yields a 500: bad input is a 4xx with ``{"error": {"code", "message"}}``,
and anything that keeps us from storing an event is a 503 so that the sender retries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from receiver.admin import call_view, delivery_view, parse_since
from receiver.admin_api import ADMIN_ROUTES as OPERATOR_ROUTES
from receiver.admin_ops import authorize
from receiver.events import (
    ANALYSIS_TYPES,
    SESSION_END_TYPES,
    InvalidEvent,
    parse_call_ended,
    parse_kallglot_event,
)
from receiver.gate import StartGate
from receiver.metrics import Metrics
from receiver.openapi import openapi_json
from receiver.signing import SignatureError, verify_kallglot, verify_standard_webhooks
from receiver.store import EventOutcome, Store, StoreError
from receiver.usecases import KALLGLOT, TELEPHONY, Intake, Wakeups

log = logging.getLogger("receiver")
_KNOWN_TYPES = frozenset((*SESSION_END_TYPES, *ANALYSIS_TYPES))


class _Answer(Response):
    """A 200 built once per outcome: the answer to every inbound event (the hot path). Each request
    gets its own copy of the header list, which a middleware may change in place."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": list(self.raw_headers)}
        )
        await send({"type": "http.response.body", "body": self.body})


_ANSWERS = {
    outcome: _Answer(json.dumps({"status": outcome.value}).encode(), media_type="application/json")
    for outcome in EventOutcome
}


class BodyTooLarge(Exception):
    pass


def error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


@dataclass
class HttpState:
    """What the endpoints need, owned by the app's lifespan: verified events go to ``intake``;
    operator endpoints read the store and wake the loops."""

    intake: Intake
    store: Store
    handlers: Sequence[str]
    gate: StartGate
    wakeups: Wakeups
    metrics: Metrics
    clock: Callable[[], float]
    kallglot_secrets: list[str]
    inbound_secrets: list[str]
    admin_token: str | None
    tolerance: float
    max_body: int
    draining: bool = False
    show_personal_data: bool = False  # RECEIVER_ADMIN_SHOW_PERSONAL_DATA (operators)


def _state(request: Request) -> HttpState:
    state: HttpState = request.app.state.http
    return state


async def read_body(request: Request, limit: int) -> bytes:
    """The body, at most ``limit`` bytes, read straight from ASGI ``receive`` (the hot path: one
    message in the common case, no generator)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise BodyTooLarge
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


#: Verifies, parses and hands one inbound body to intake; answers (event type, outcome).
Ingest = Callable[[Request, HttpState, bytes], Awaitable[tuple[str, EventOutcome]]]


async def _inbound(request: Request, source: str, handle: Ingest) -> Response:
    """The shared shape of both inbound endpoints, with the status mapping of CONTRACT §4."""
    http = _state(request)
    metrics = http.metrics
    event_type = "unknown"
    try:
        body = await read_body(request, http.max_body)
        event_type, outcome = await handle(request, http, body)
    except BodyTooLarge:
        metrics.event(source, event_type, "malformed")
        return error(413, "body_too_large", f"request bodies are limited to {http.max_body} bytes")
    except SignatureError as exc:
        metrics.event(source, event_type, "bad_signature")
        log.warning("webhook.rejected", extra={"source": source, "reason": exc.reason})
        return error(401, exc.reason, "the signature is missing, malformed, stale or does not match")
    except InvalidEvent as exc:
        metrics.event(source, event_type, "malformed")
        log.warning("webhook.malformed", extra={"source": source, "reason": exc.message})
        return error(400, "invalid_event", exc.message)
    except ClientDisconnect:
        return error(400, "client_disconnected", "the client went away before the body was read")
    except StoreError as exc:
        metrics.event(source, event_type, "unavailable")
        log.warning("webhook.store_unavailable", extra={"source": source, "error": str(exc)})
        return error(
            503, "store_unavailable", "the event could not be stored; retry later", {"Retry-After": "5"}
        )
    label = event_type if event_type in _KNOWN_TYPES or event_type == "call-ended" else "other"
    metrics.event(source, label, outcome.value)
    return _ANSWERS[outcome]


async def _kallglot(request: Request, http: HttpState, body: bytes) -> tuple[str, EventOutcome]:
    verify_kallglot(
        request.headers.get("kallglot-signature"),
        body,
        http.kallglot_secrets,
        tolerance_seconds=http.tolerance,
        now=http.clock(),
    )
    event = parse_kallglot_event(body)
    return event.type, await http.intake.accept_kallglot(event)


async def _call_ended(request: Request, http: HttpState, body: bytes) -> tuple[str, EventOutcome]:
    pbx = getattr(request.app.state, "pbx", None)  # telephony: PBX mapping / bearer token
    if pbx is not None:
        webhook_id = pbx.authenticate(request.headers, body, http.clock())
    else:
        webhook_id = verify_standard_webhooks(
            request.headers,
            body,
            http.inbound_secrets,
            tolerance_seconds=http.tolerance,
            now=http.clock(),
        )
    if len(webhook_id) > 256:
        raise InvalidEvent("webhook-id is longer than 256 characters")
    event = pbx.parse(body) if pbx is not None else parse_call_ended(body)
    return "call-ended", await http.intake.accept_call_ended(webhook_id, event)


async def kallglot_webhook(request: Request) -> Response:
    return await _inbound(request, KALLGLOT, _kallglot)


async def call_ended(request: Request) -> Response:
    pbx = getattr(request.app.state, "pbx", None)
    if not _state(request).inbound_secrets and not (pbx is not None and pbx.enabled):
        return error(
            404,
            "not_found",
            "set RECEIVER_INBOUND_SECRETS (or RECEIVER_INBOUND_BEARER_TOKEN) to enable /events/call-ended",
        )
    return await _inbound(request, TELEPHONY, _call_ended)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    http = _state(request)
    if http.draining:
        return error(503, "draining", "shutting down")
    if not await http.store.ready():
        return error(503, "store_unavailable", "the store is unreachable or not migrated")
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    registry = _state(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


# --- admin ----------------------------------------------------------------------------------


def _authorize(request: Request) -> HttpState:
    http: HttpState = authorize(request)
    return http


async def admin_call(request: Request) -> Response:
    http = _authorize(request)
    found = await http.store.get_call(request.path_params["session_id"])
    if found is None:
        return error(404, "not_found", "no such call")
    return JSONResponse(call_view(*found))


def _filters(values: dict[str, Any]) -> tuple[str | None, str | None, float | None]:
    handler, session, since = (
        values.get("handler"),
        values.get("session_id", values.get("session")),
        values.get("since"),
    )
    for name, value in (("handler", handler), ("session_id", session)):
        if value is not None and not isinstance(value, str):
            raise HTTPException(400, f"{name} must be a string")
        if value is not None and "\x00" in value:  # PostgreSQL refuses NUL in text: a 503 on every try
            raise HTTPException(400, f"{name} must not contain NUL")
    try:
        parsed_since = parse_since(str(since)) if since is not None else None
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    return handler, session, parsed_since


async def admin_dead_letters(request: Request) -> Response:
    http = _authorize(request)
    handler, session, since = _filters(dict(request.query_params))
    raw_limit = request.query_params.get("limit", "100")
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= 1000:
        raise HTTPException(400, "limit must be a whole number from 1 to 1000")
    records = await http.store.list_dead_letters(handler, session, since, int(raw_limit))
    return JSONResponse({"dead_letters": [delivery_view(d) for d in records]})


async def admin_replay(request: Request) -> Response:
    http = _authorize(request)
    values: dict[str, Any] = dict(request.query_params)
    body = await read_body(request, 65536)
    if body.strip():
        try:
            parsed = json.loads(body)
        except ValueError:
            raise HTTPException(400, "the body must be a JSON object") from None
        if not isinstance(parsed, dict):
            raise HTTPException(400, "the body must be a JSON object")
        values |= parsed
    handler, session, since = _filters(values)
    if handler is not None and handler not in http.handlers:
        raise HTTPException(400, f"no handler named {handler!r}")
    count = await http.store.replay_dead_letters(handler, session, since, http.clock())
    if count:
        http.wakeups("deliver")
    log.info("dead_letters.replayed", extra={"count": count, "handler": handler, "session_id": session})
    return JSONResponse({"replayed": count})


# --- error mapping for everything else ------------------------------------------------------


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}
    return error(exc.status_code, codes.get(exc.status_code, "error"), exc.detail, exc.headers)


async def body_too_large(request: Request, exc: Exception) -> Response:
    return error(413, "body_too_large", "request body too large")


async def store_error(request: Request, exc: Exception) -> Response:
    return error(503, "store_unavailable", "the store is unavailable; retry later", {"Retry-After": "5"})


#: The public listener (RECEIVER_PORT): inbound webhooks and health only (CONTRACT §9 "Listeners").
PUBLIC_ROUTES = [
    Route("/webhooks/kallglot", kallglot_webhook, methods=["POST"]),
    Route("/events/call-ended", call_ended, methods=["POST"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
# telephony: PUBLIC_ROUTES += CARRIER_ROUTES (from receiver/carriers)

#: The admin listener (RECEIVER_ADMIN_PORT): metrics, operator API, console, OpenAPI, health.
ADMIN_ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    *OPERATOR_ROUTES,  # receiver.admin_api: before the older admin routes below
    Route("/admin/calls/{session_id}", admin_call, methods=["GET"]),
    Route("/admin/dead-letters", admin_dead_letters, methods=["GET"]),
    Route("/admin/dead-letters/replay", admin_replay, methods=["POST"]),
]

EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    HTTPException: http_exception,
    BodyTooLarge: body_too_large,
    StoreError: store_error,
}
