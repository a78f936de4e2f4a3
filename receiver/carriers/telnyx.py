"""Telnyx Call Control / TeXML webhooks: ``telnyx-signature-ed25519`` and the payload we act on.

Telnyx signs ``{telnyx-timestamp}|{raw body}`` with Ed25519; the account's public key (Base64, from
the Mission Control portal) verifies it. Ed25519 comes from ``cryptography`` (already required by
the S3 stack, maintained by the PyCA); the timestamp must be within the tolerance either way.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from receiver.events import SESSION_ID, InvalidEvent, parse_json_object
from receiver.signing import SignatureError
from receiver.store.carrier_port import CarrierEvent, LegKind

SOURCE = "telnyx"
HANGUP = "call.hangup"
_CALL_ID = re.compile(r"^[A-Za-z0-9_:.\-]{1,200}$")
_FIELDS = ("from", "to", "direction", "hangup_cause", "hangup_source", "start_time", "end_time")


def public_key(value: str) -> Ed25519PublicKey:
    """The Base64 public key of the portal; ValueError names what is wrong."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be the Base64 Ed25519 public key shown in the Telnyx portal") from None
    if len(raw) != 32:
        raise ValueError("must be a Base64 Ed25519 public key (32 bytes)")
    return Ed25519PublicKey.from_public_bytes(raw)


def sign(private_key: Ed25519PrivateKey, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers Telnyx would send (the sandbox and ``send telnyx.hangup`` use it)."""
    signed = private_key.sign(str(timestamp).encode() + b"|" + body)
    return {"telnyx-timestamp": str(timestamp), "telnyx-signature-ed25519": base64.b64encode(signed).decode()}


def verify(headers: Any, body: bytes, key: Ed25519PublicKey, *, tolerance_seconds: float, now: float) -> None:
    """Raise SignatureError unless the body is signed by ``key`` within the tolerance."""
    raw_signature, raw_ts = headers.get("telnyx-signature-ed25519"), headers.get("telnyx-timestamp")
    if not raw_signature or not raw_ts:
        raise SignatureError("missing_signature")
    if not raw_ts.isdigit() or len(raw_ts) > 12:
        raise SignatureError("malformed_signature")
    if abs(now - int(raw_ts)) > tolerance_seconds:
        raise SignatureError("stale_timestamp")
    try:
        signature = base64.b64decode(raw_signature.strip(), validate=True)
        key.verify(signature, raw_ts.encode() + b"|" + body)
    except (binascii.Error, ValueError):
        raise SignatureError("malformed_signature") from None
    except InvalidSignature:
        raise SignatureError("bad_signature") from None


def _client_state_session(value: Any) -> str | None:
    """Telnyx ``client_state`` is Base64 of whatever the user set; we read ``{"session_id": …}``."""
    if not isinstance(value, str) or not value:
        return None
    try:
        data = json.loads(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    session = data.get("session_id") if isinstance(data, dict) else None
    return session if isinstance(session, str) and SESSION_ID.match(session) else None


def _duration(payload: dict[str, Any]) -> float | None:
    from datetime import datetime

    try:
        start = datetime.fromisoformat(str(payload["start_time"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(payload["end_time"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return max(0.0, round((end - start).total_seconds(), 3))


def parse(body: bytes, session_id: str | None) -> CarrierEvent:
    """A verified webhook as a carrier event (session from the URL, else ``client_state``)."""
    envelope = parse_json_object(body)
    data = envelope.get("data")
    if not isinstance(data, dict):
        raise InvalidEvent("data must be an object")
    event_id, event_type, payload = data.get("id"), data.get("event_type"), data.get("payload")
    if not isinstance(event_id, str) or not event_id or len(event_id) > 256:
        raise InvalidEvent("data.id must be the event id")
    if not isinstance(event_type, str) or not event_type or len(event_type) > 100:
        raise InvalidEvent("data.event_type must be a string")
    if not isinstance(payload, dict):
        raise InvalidEvent("data.payload must be an object")
    call_id = payload.get("call_control_id")
    if not isinstance(call_id, str) or not _CALL_ID.match(call_id):
        raise InvalidEvent("data.payload.call_control_id must be a call control id")
    call: dict[str, Any] = {"carrier": SOURCE, "carrier_call_id": call_id}
    for name in _FIELDS:
        value = payload.get(name)
        if isinstance(value, str) and value and len(value) <= 200:
            call[name] = value
    if isinstance(payload.get("call_session_id"), str):
        call["carrier_session_id"] = payload["call_session_id"][:200]
    if call.get("direction") not in (None, "inbound", "outbound"):
        call["direction"] = "outbound" if str(call["direction"]).startswith("outgoing") else "inbound"
    duration = _duration(payload)
    if duration is not None:
        call["duration_seconds"] = duration
    if "end_time" in call:
        call["ended_at"] = call["end_time"]
    return CarrierEvent(
        source=SOURCE,
        event_id=event_id,
        carrier_call_id=call_id,
        session_id=session_id or _client_state_session(payload.get("client_state")),
        kind=LegKind.ENDED if event_type == HANGUP else LegKind.LIVE,
        status=event_type,
        call=call,
    )
