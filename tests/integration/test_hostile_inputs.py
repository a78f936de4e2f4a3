"""Every bad input gets its 4xx with a JSON error body, and spends nothing."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from receiver.sandbox import DEV_WEBHOOK_SECRET
from receiver.signing import sign_kallglot, sign_standard_webhooks
from tests.integration.harness import INBOUND_SECRET, Stack

GOOD = {
    "id": "evt_hostile",
    "type": "session.ended",
    "api_version": "v1",
    "created_at": "2026-03-26T11:04:20Z",
    "data": {"id": "sess_hostile1", "object": "session", "status": "ended", "duration": 245.3},
}


def _body(**changes: Any) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def _signed(body: bytes, *, secret: str = DEV_WEBHOOK_SECRET, skew: int = 0) -> dict[str, str]:
    return {"Kallglot-Signature": sign_kallglot(secret, int(time.time()) + skew, body)}


KallglotCase = tuple[bytes, Callable[[bytes], dict[str, str]], int, str]

KALLGLOT_CASES: dict[str, KallglotCase] = {
    "missing signature": (_body(), lambda b: {}, 401, "missing_signature"),
    "garbage signature": (_body(), lambda b: {"Kallglot-Signature": "garbage"}, 401, "malformed_signature"),
    "non-numeric timestamp": (
        _body(),
        lambda b: {"Kallglot-Signature": "t=soon,v1=abc"},
        401,
        "malformed_signature",
    ),
    "wrong secret": (_body(), lambda b: _signed(b, secret="not-the-secret"), 401, "bad_signature"),
    "stale timestamp": (_body(), lambda b: _signed(b, skew=-3600), 401, "stale_signature"),
    "timestamp from the future": (_body(), lambda b: _signed(b, skew=3600), 401, "stale_signature"),
    "altered body": (_body(), lambda b: _signed(_body(id="evt_other")), 401, "bad_signature"),
    "invalid JSON": (b"{not json", _signed, 400, "invalid_event"),
    "not UTF-8": (b"\xff\xfe{}", _signed, 400, "invalid_event"),
    "a JSON array": (b"[1, 2]", _signed, 400, "invalid_event"),
    "missing id": (
        json.dumps({k: v for k, v in GOOD.items() if k != "id"}).encode(),
        _signed,
        400,
        "invalid_event",
    ),
    "numeric id": (_body(id=42), _signed, 400, "invalid_event"),
    "data is a list": (_body(data=[]), _signed, 400, "invalid_event"),
    "path traversal session id": (
        _body(data={"id": "../../v1/admin", "object": "session"}),
        _signed,
        400,
        "invalid_event",
    ),
    "session id missing": (_body(data={"object": "session"}), _signed, 400, "invalid_event"),
    "duration is text": (
        _body(data={"id": "sess_hostile1", "duration": "long"}),
        _signed,
        400,
        "invalid_event",
    ),
    "analysis event without an analysis id": (
        _body(type="analysis.complete", data={"session_id": "sess_hostile1", "status": "completed"}),
        _signed,
        400,
        "invalid_event",
    ),
    "deeply nested JSON": (b"[" * 100000 + b"]" * 100000, _signed, 400, "invalid_event"),
}


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"), KALLGLOT_CASES.values(), ids=KALLGLOT_CASES.keys()
)
async def test_bad_kallglot_webhooks_are_refused_and_spend_nothing(
    stack: Stack, body: bytes, headers: Callable[[bytes], dict[str, str]], status: int, code: str
) -> None:
    response = await stack.http.post(f"{stack.url}/webhooks/kallglot", content=body, headers=headers(body))

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert stack.stats()["analysis_posts"] == 0
    assert await stack.call("sess_hostile1") is None


async def test_an_oversized_body_is_refused_with_413(stack: Stack) -> None:
    body = _body(padding="x" * 2_000_000)
    response = await stack.http.post(f"{stack.url}/webhooks/kallglot", content=body, headers=_signed(body))

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


async def test_an_oversized_chunked_body_without_length_is_refused_with_413(stack: Stack) -> None:
    async def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 65536

    response = await stack.http.post(f"{stack.url}/webhooks/kallglot", content=chunks())

    assert response.status_code == 413


async def test_a_signed_event_sent_in_small_chunks_is_read_whole_and_stored(stack: Stack) -> None:
    body = _body(type="session.ended", data={"id": "sess_chunked1", "duration_seconds": 12})
    signed = _signed(body)

    async def chunks() -> Any:
        for start in range(0, len(body), 7):
            yield body[start : start + 7]

    response = await stack.http.post(f"{stack.url}/webhooks/kallglot", content=chunks(), headers=signed)

    assert response.status_code == 200
    assert response.json() == {"status": "accepted"}


async def test_event_types_we_do_not_handle_are_acknowledged_and_ignored(stack: Stack) -> None:
    body = _body(type="transcript.segment", data={"session_id": "sess_hostile1", "text": "hi"})
    response = await stack.http.post(f"{stack.url}/webhooks/kallglot", content=body, headers=_signed(body))

    assert response.status_code == 200
    assert response.json() == {"status": "ignored"}
    assert stack.stats()["analysis_posts"] == 0


def _sw(body: bytes, secret: str = INBOUND_SECRET, skew: int = 0) -> dict[str, str]:
    return sign_standard_webhooks(secret, f"msg_{uuid.uuid4().hex}", int(time.time()) + skew, body)


CALL = json.dumps({"session_id": "sess_hostile1", "duration_seconds": 12}).encode()
OTHER_SECRET = "whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA=="

CALL_CASES: dict[str, tuple[bytes, Callable[[bytes], dict[str, str]], int, str]] = {
    "no headers": (CALL, lambda b: {}, 401, "missing_signature"),
    "wrong secret": (CALL, lambda b: _sw(b, OTHER_SECRET), 401, "bad_signature"),
    "stale": (CALL, lambda b: _sw(b, skew=-3600), 401, "stale_signature"),
    "altered body": (CALL, lambda b: _sw(b"{}"), 401, "bad_signature"),
    "no v1 signature": (
        CALL,
        lambda b: {**_sw(b), "webhook-signature": "v2,abc"},
        401,
        "malformed_signature",
    ),
    "missing session_id": (b'{"duration_seconds": 3}', _sw, 400, "invalid_event"),
    "invalid session id": (b'{"session_id": "a b/c"}', _sw, 400, "invalid_event"),
    "negative duration": (b'{"session_id": "sess_x", "duration_seconds": -1}', _sw, 400, "invalid_event"),
    "unknown direction": (b'{"session_id": "sess_x", "direction": "sideways"}', _sw, 400, "invalid_event"),
    "metadata is a list": (b'{"session_id": "sess_x", "metadata": []}', _sw, 400, "invalid_event"),
    "end_session is text": (b'{"session_id": "sess_x", "end_session": "please"}', _sw, 400, "invalid_event"),
    "invalid JSON": (b"{", _sw, 400, "invalid_event"),
}


@pytest.mark.parametrize(("body", "headers", "status", "code"), CALL_CASES.values(), ids=CALL_CASES.keys())
async def test_bad_call_ended_events_are_refused_and_spend_nothing(
    stack: Stack, body: bytes, headers: Callable[[bytes], dict[str, str]], status: int, code: str
) -> None:
    response = await stack.http.post(f"{stack.url}/events/call-ended", content=body, headers=headers(body))

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert stack.stats()["analysis_posts"] == 0


_ADMIN = {"Authorization": "Bearer test-admin-token"}


@pytest.mark.parametrize(
    ("listener", "method", "path", "headers", "status"),
    [
        ("public", "GET", "/webhooks/kallglot", {}, 405),
        ("public", "GET", "/nowhere", {}, 404),
        ("public", "GET", "/metrics", {}, 404),
        ("public", "GET", "/openapi.json", {}, 404),
        ("public", "GET", "/admin/calls/sess_x", _ADMIN, 404),
        ("public", "POST", "/admin/dead-letters/replay", _ADMIN, 404),
        ("admin", "POST", "/webhooks/kallglot", {}, 404),
        ("admin", "POST", "/events/call-ended", {}, 404),
        ("admin", "GET", "/nowhere", {}, 404),
        ("admin", "GET", "/admin/calls/sess_x", {}, 401),
        ("admin", "GET", "/admin/calls/sess_x", {"Authorization": "Bearer wrong"}, 401),
        ("admin", "GET", "/admin/calls/sess_x", {"Authorization": "Basic dGVzdC1hZG1pbi10b2tlbg=="}, 401),
        ("admin", "GET", "/admin/calls/sess_x", _ADMIN, 404),
        ("admin", "GET", "/admin/dead-letters?since=yesterday", _ADMIN, 400),
        ("admin", "GET", "/admin/dead-letters?limit=-1", _ADMIN, 400),
        ("admin", "GET", "/admin/dead-letters?handler=a%00b", _ADMIN, 400),
        ("admin", "GET", "/admin/dead-letters?session_id=sess_%00", _ADMIN, 400),
        ("admin", "POST", "/admin/dead-letters/replay", {"Authorization": "Bearer wrong"}, 401),
    ],
)
async def test_other_requests_get_json_errors(
    stack: Stack, listener: str, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    base = stack.url if listener == "public" else stack.admin_url
    response = await stack.http.request(method, f"{base}{path}", headers=headers)

    assert response.status_code == status
    assert response.json()["error"]["code"]


async def test_replay_refuses_a_body_that_is_not_an_object(stack: Stack) -> None:
    response = await stack.http.post(
        f"{stack.admin_url}/admin/dead-letters/replay",
        content=b"[1]",
        headers={"Authorization": "Bearer test-admin-token"},
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
