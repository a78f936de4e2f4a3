"""Signed carrier requests for the telephony tests (built with the same code ``send`` uses)."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx

from receiver.carriers import dev
from tests.integration.harness import ADMIN_TOKEN, Stack

TWILIO_TOKEN = "test-twilio-auth-token-0123456789"
TELNYX_SEED = base64.b64encode(b"t" * 32).decode()
TELNYX_PUBLIC = dev.public_key_of(TELNYX_SEED)
CARRIERS = {"twilio_auth_token": TWILIO_TOKEN, "telnyx_public_key": TELNYX_PUBLIC}


def call_sid() -> str:
    return f"CA{uuid.uuid4().hex}"


async def twilio(
    stack: Stack,
    params: dict[str, str],
    *,
    query: str = "",
    token: str = TWILIO_TOKEN,
    signed_url: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    url = f"{stack.url}/events/twilio{query}"
    body, signed = dev.twilio_request(signed_url or url, params, token)
    return await stack.http.post(url, content=body, headers={**signed, **(headers or {})})


async def telnyx(
    stack: Stack,
    payload: dict[str, Any],
    *,
    seed: str = TELNYX_SEED,
    timestamp: int | None = None,
    query: str = "",
) -> httpx.Response:
    body, headers = dev.telnyx_request(payload, seed, timestamp)
    return await stack.http.post(f"{stack.url}/events/telnyx{query}", content=body, headers=headers)


async def carrier_events(stack: Stack, session_id: str | None = None) -> list[dict[str, Any]]:
    params = {"session_id": session_id} if session_id else {}
    response = await stack.http.get(
        f"{stack.admin_url}/admin/carrier-events",
        params=params,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == 200
    events: list[dict[str, Any]] = response.json()["carrier_events"]
    return events


async def kallglot_provider_event(stack: Stack, session_id: str, call_id: str, key: str = "call_sid") -> int:
    """Kallglot's ``session.provider.disconnected`` carrying the carrier call id (OLD provider object)."""
    body = json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "type": "session.provider.disconnected",
            "api_version": "v1",
            "created_at": "2026-03-26T11:04:20Z",
            "data": {"id": session_id, "object": "session", "provider": {"type": "twilio", key: call_id}},
        }
    ).encode()
    return (await stack.post_kallglot(body)).status_code
