"""Hole 1: bytes >= 0x80 in a signature header are a plain 401 through a real receiver, never a 500."""

from __future__ import annotations

import time

import pytest

from tests.integration.harness import Stack

BODY = b'{"id": "evt_bytes", "type": "session.ended", "data": {"id": "sess_bytes"}}'


@pytest.mark.parametrize(
    "signature",
    [b",v1=\xe9abc", b",v1=" + b"\xe9" * 64, b",v1=" + b"\xff" * 64 + b",v1=zz"],
    ids=["short-latin1", "64-latin1", "several"],
)
async def test_non_ascii_kallglot_signatures_are_a_401(stack: Stack, signature: bytes) -> None:
    header = f"t={int(time.time())}".encode() + signature
    response = await stack.http.post(
        f"{stack.url}/webhooks/kallglot", content=BODY, headers=[(b"Kallglot-Signature", header)]
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "malformed_signature"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"webhook-signature", b"v1,\xe9\xe9"),
        (b"webhook-signature", b"v1," + b"\xe9" * 43 + b"="),
        (b"webhook-timestamp", b"\xd9\xa1\xd9\xa2"),
    ],
    ids=["signature", "signature-44", "timestamp"],
)
async def test_non_ascii_standard_webhooks_headers_are_a_401(stack: Stack, name: bytes, value: bytes) -> None:
    headers = {
        b"webhook-id": b"msg_bytes",
        b"webhook-timestamp": str(int(time.time())).encode(),
        b"webhook-signature": b"v1," + b"A" * 43 + b"=",
    } | {name: value}
    response = await stack.http.post(
        f"{stack.url}/events/call-ended",
        content=b'{"session_id": "sess_bytes"}',
        headers=list(headers.items()),
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] in ("malformed_signature", "bad_signature")
    assert stack.stats()["analysis_posts"] == 0
