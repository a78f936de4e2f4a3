"""Development carrier credentials of ``serve --sandbox`` and the ``send twilio.*``/``telnyx.*`` builders.

These credentials are public (documented): they only ever sign callbacks to a local sandbox.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from typing import Any
from urllib.parse import quote, urlencode

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from receiver.carriers import telnyx, twilio

#: ``RECEIVER_TWILIO_AUTH_TOKEN`` of ``serve --sandbox`` (and of ``send twilio.completed``) by default.
DEV_TWILIO_AUTH_TOKEN = "sandbox-twilio-auth-token-dev"  # noqa: S105 (documented development token)
#: The sandbox's fixed Ed25519 key pair for Telnyx: the seed (``send --secret`` takes the same form).
DEV_TELNYX_PRIVATE_KEY = base64.b64encode(
    hashlib.sha256(b"kallglot-receiver-sandbox-telnyx").digest()
).decode()


def telnyx_private_key(seed_b64: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed_b64))


def public_key_of(seed_b64: str) -> str:
    raw = telnyx_private_key(seed_b64).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


#: ``RECEIVER_TELNYX_PUBLIC_KEY`` of ``serve --sandbox`` by default.
DEV_TELNYX_PUBLIC_KEY = public_key_of(DEV_TELNYX_PRIVATE_KEY)


def sandbox_defaults() -> dict[str, tuple[str, str]]:
    """Environment variable -> (settings field, development value), like the other sandbox secrets."""
    return {
        "RECEIVER_TWILIO_AUTH_TOKEN": ("twilio_auth_token", DEV_TWILIO_AUTH_TOKEN),
        "RECEIVER_TELNYX_PUBLIC_KEY": ("telnyx_public_key", DEV_TELNYX_PUBLIC_KEY),
    }


def twilio_params(
    session_id: str | None, call_sid: str, status: str = "completed", **extra: str
) -> dict[str, str]:
    """A Voice status callback as Twilio posts it (``session_id`` as a custom parameter if given)."""
    params = {
        "AccountSid": "AC" + "0" * 32,
        "CallSid": call_sid,
        "CallStatus": status,
        "CallDuration": "245",
        "Direction": "inbound",
        "From": "+14155550100",
        "To": "+14155550199",
        "SequenceNumber": "3",
        "Timestamp": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
        "ApiVersion": "2010-04-01",
    }
    if session_id is not None:
        params["session_id"] = session_id
    params.update(extra)
    return params


def twilio_request(
    url: str, params: dict[str, str], token: str = DEV_TWILIO_AUTH_TOKEN
) -> tuple[bytes, dict[str, str]]:
    body = urlencode(params).encode()
    return body, {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": twilio.signature(token, url, params.items()),
    }


def telnyx_payload(
    session_id: str | None, call_control_id: str, event_type: str = telnyx.HANGUP, **extra: Any
) -> dict[str, Any]:
    """A Call Control webhook as Telnyx posts it (``client_state`` carries the session if given)."""
    now = time.time()
    payload: dict[str, Any] = {
        "call_control_id": call_control_id,
        "call_leg_id": str(uuid.uuid4()),
        "call_session_id": str(uuid.uuid4()),
        "connection_id": "1494404757140276705",
        "from": "+14155550100",
        "to": "+14155550199",
        "direction": "incoming",
        "state": "hangup" if event_type == telnyx.HANGUP else "answered",
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 245)),
        "end_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "hangup_cause": "normal_clearing",
        "hangup_source": "caller",
    }
    if session_id is not None:
        payload["client_state"] = base64.b64encode(json.dumps({"session_id": session_id}).encode()).decode()
    payload.update(extra)
    return {
        "data": {
            "event_type": event_type,
            "id": str(uuid.uuid4()),
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "payload": payload,
            "record_type": "event",
        },
        "meta": {"attempt": 1, "delivered_to": "https://example.com/events/telnyx"},
    }


def telnyx_request(
    payload: dict[str, Any], seed_b64: str = DEV_TELNYX_PRIVATE_KEY, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    headers = telnyx.sign(
        telnyx_private_key(seed_b64), int(time.time()) if timestamp is None else timestamp, body
    )
    return body, {"Content-Type": "application/json", **headers}


def send_request(
    event: str, base: str, session_id: str, secret: str | None
) -> tuple[str, bytes, dict[str, str]]:
    """URL, body and headers of ``kallglot-receiver send twilio.completed|telnyx.hangup``."""
    if event == "twilio.completed":
        url = f"{base}/events/twilio?session_id={quote(session_id)}"
        body, headers = twilio_request(
            url, twilio_params(None, f"CA{uuid.uuid4().hex}"), secret or DEV_TWILIO_AUTH_TOKEN
        )
        return url, body, headers
    body, headers = telnyx_request(
        telnyx_payload(session_id, f"v3:{uuid.uuid4().hex}"), secret or DEV_TELNYX_PRIVATE_KEY
    )
    return f"{base}/events/telnyx", body, headers
