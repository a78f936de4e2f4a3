"""The carriers' public endpoints: ``POST /events/twilio`` and ``POST /events/telnyx`` (CONTRACT §9),
and ``GET /admin/carrier-events`` (carrier events of a session, or the unmatched ones).

Each preset answers 404 until its secret is set. The status mapping is the one of the other inbound
endpoints: 401 bad signature, 400 bad body, 413 too large, 503 when the event could not be stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.carriers import telnyx, twilio
from receiver.carriers.desk import Telephony
from receiver.events import SESSION_ID, InvalidEvent
from receiver.routes import BodyTooLarge, _authorize, error, read_body
from receiver.signing import SignatureError
from receiver.store import StoreError
from receiver.store.carrier_port import CarrierEvent, CarrierEventRecord

log = logging.getLogger("receiver")

Parse = Callable[[Request, Telephony, bytes], CarrierEvent]


def _telephony(request: Request) -> Telephony:
    desk: Telephony = request.app.state.telephony
    return desk


def _query_session(request: Request) -> str | None:
    value = request.query_params.get("session_id")
    if value is None:
        return None
    if not SESSION_ID.match(value):
        raise InvalidEvent("the session_id query parameter must be a session id such as sess_01HXYZ")
    return value


def public_url(request: Request, base: str | None) -> str:
    """The URL the carrier requested: ``RECEIVER_PUBLIC_URL`` + path + query behind a proxy."""
    if base is None:
        return str(request.url)
    query = request.url.query
    return base.rstrip("/") + request.url.path + (f"?{query}" if query else "")


def _twilio(request: Request, desk: Telephony, body: bytes) -> CarrierEvent:
    assert desk.config.twilio_token is not None
    try:
        params = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=500)
    except (UnicodeDecodeError, ValueError):
        raise InvalidEvent("the body must be form-encoded UTF-8 (at most 500 fields)") from None
    twilio.verify(
        request.headers.get("x-twilio-signature"),
        desk.config.twilio_token,
        public_url(request, desk.config.public_url),
        params,
    )
    # PostgreSQL refuses NUL in text: dropped here, after the signature (it carries no meaning).
    fields = {name.replace("\x00", ""): value.replace("\x00", "") for name, value in params}
    session = _query_session(request)
    if session is None and fields.get("session_id") and not SESSION_ID.match(fields["session_id"]):
        raise InvalidEvent("session_id must be a session id such as sess_01HXYZ")
    return twilio.parse(fields, request.headers.get("i-twilio-idempotency-token"), session)


def _telnyx(request: Request, desk: Telephony, body: bytes) -> CarrierEvent:
    assert desk.config.telnyx_key is not None
    telnyx.verify(
        request.headers,
        body,
        desk.config.telnyx_key,
        tolerance_seconds=desk.config.tolerance_seconds,
        now=desk.clock(),
    )
    return telnyx.parse(body, _query_session(request))


async def _carrier(request: Request, source: str, enabled: bool, parse: Parse) -> Response:
    if not enabled:
        setting = {"twilio": "RECEIVER_TWILIO_AUTH_TOKEN", "telnyx": "RECEIVER_TELNYX_PUBLIC_KEY"}[source]
        return error(404, "not_found", f"set {setting} to enable /events/{source}")
    desk = _telephony(request)
    metrics = desk.metrics
    try:
        body = await read_body(request, request.app.state.http.max_body)
        event = parse(request, desk, body)
        applied = await desk.accept(event)
    except BodyTooLarge:
        metrics.event(source, "unknown", "malformed")
        return error(413, "body_too_large", "the request body is too large")
    except SignatureError as exc:
        metrics.event(source, "unknown", "bad_signature")
        log.warning("webhook.rejected", extra={"source": source, "reason": exc.reason})
        return error(401, exc.reason, "the signature is missing, malformed, stale or does not match")
    except InvalidEvent as exc:
        metrics.event(source, "unknown", "malformed")
        log.warning("webhook.malformed", extra={"source": source, "reason": exc.message})
        return error(400, "invalid_event", exc.message)
    except ClientDisconnect:
        return error(400, "client_disconnected", "the client went away before the body was read")
    except StoreError as exc:
        metrics.event(source, "unknown", "unavailable")
        log.error("webhook.store_unavailable", extra={"source": source, "error": str(exc)})
        return error(
            503, "store_unavailable", "the event could not be stored; retry later", {"Retry-After": "5"}
        )
    metrics.event(source, event.kind.value, applied.outcome.value)
    return JSONResponse({"status": applied.outcome.value, "session_id": applied.session_id})


async def twilio_callback(request: Request) -> Response:
    desk: Telephony | None = getattr(request.app.state, "telephony", None)
    return await _carrier(request, "twilio", bool(desk and desk.config.twilio_token), _twilio)


async def telnyx_webhook(request: Request) -> Response:
    desk: Telephony | None = getattr(request.app.state, "telephony", None)
    return await _carrier(request, "telnyx", bool(desk and desk.config.telnyx_key), _telnyx)


def event_view(record: CarrierEventRecord) -> dict[str, Any]:
    return {
        "source": record.source,
        "event_id": record.event_id,
        "carrier_call_id": record.carrier_call_id,
        "session_id": record.session_id,
        "matched": record.session_id is not None,
        "kind": record.kind.value,
        "status": record.status,
        "reason": record.reason,
        "call": record.call,
        "received_at": record.received_at,
        "matched_at": record.matched_at,
    }


async def admin_carrier_events(request: Request) -> Response:
    http = _authorize(request)
    session = request.query_params.get("session_id")
    if session is not None and not SESSION_ID.match(session):
        return error(400, "bad_request", "session_id must be a session id such as sess_01HXYZ")
    records = await http.store.list_carrier_events(session, 500)
    return JSONResponse({"unmatched": session is None, "carrier_events": [event_view(r) for r in records]})


PUBLIC_ROUTES = [
    Route("/events/twilio", twilio_callback, methods=["POST"]),
    Route("/events/telnyx", telnyx_webhook, methods=["POST"]),
]
ADMIN_ROUTES = [Route("/admin/carrier-events", admin_carrier_events, methods=["GET"])]
