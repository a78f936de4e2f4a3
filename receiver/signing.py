"""Webhook signatures: Kallglot-Signature and Standard Webhooks, verify and sign; pure.

Kallglot signs ``"{t}.{raw body}"`` with HMAC-SHA256 (lowercase hex) and sends
``Kallglot-Signature: t=<unix>,v1=<hex>``. Standard Webhooks (https://www.standardwebhooks.com)
signs ``"{webhook-id}.{webhook-timestamp}.{raw body}"`` with HMAC-SHA256 (base64) keyed with the
base64 part of a ``whsec_…`` secret and sends ``webhook-signature: v1,<b64> [v1,<b64> …]``.

Both verifiers accept several secrets (rotation), several signatures in one header, check the
timestamp against a tolerance window with an injected clock, and compare in constant time.
Errors carry a reason for logs and metrics but never a secret or a signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence

Clock = Callable[[], float]


class SignatureError(Exception):
    """The request is not signed by anyone we trust (HTTP 401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- Kallglot-Signature ---------------------------------------------------------------------


def kallglot_signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"{timestamp}.{body}"``."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign_kallglot(secret: str, timestamp: int, body: bytes) -> str:
    """The value of a ``Kallglot-Signature`` header for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={kallglot_signature(secret, timestamp, body)}"


def verify_kallglot(
    header: str | None,
    body: bytes,
    secrets: Sequence[str],
    *,
    tolerance_seconds: float,
    now: float,
) -> int:
    """Check a ``Kallglot-Signature`` header; return its timestamp or raise SignatureError."""
    if not header:
        raise SignatureError("missing_signature")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("malformed_signature") from None
        elif key == "v1":
            candidates.append(value.strip().lower())
    if timestamp is None or not candidates:
        raise SignatureError("malformed_signature")
    if abs(now - timestamp) > tolerance_seconds:
        raise SignatureError("stale_signature")
    for secret in secrets:
        expected = kallglot_signature(secret, timestamp, body)
        if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
            return timestamp
    raise SignatureError("bad_signature")


# --- Standard Webhooks ----------------------------------------------------------------------

_WHSEC_PREFIX = "whsec_"


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_<base64>``; a bare base64 also works)."""
    encoded = secret.removeprefix(_WHSEC_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a Standard Webhooks secret must be 'whsec_' followed by base64") from None


def standard_webhooks_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def sign_standard_webhooks(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``."""
    signature = standard_webhooks_signature(standard_webhooks_key(secret), msg_id, timestamp, body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
    }


def verify_standard_webhooks(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    *,
    tolerance_seconds: float,
    now: float,
) -> str:
    """Check the Standard Webhooks headers; return the ``webhook-id`` or raise SignatureError."""
    msg_id = headers.get("webhook-id")
    raw_timestamp = headers.get("webhook-timestamp")
    header = headers.get("webhook-signature")
    if not msg_id or not raw_timestamp or not header:
        raise SignatureError("missing_signature")
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise SignatureError("malformed_signature") from None
    if abs(now - timestamp) > tolerance_seconds:
        raise SignatureError("stale_signature")
    candidates = []
    for part in header.split():
        version, sep, value = part.partition(",")
        if sep and version == "v1":
            candidates.append(value)
    if not candidates:
        raise SignatureError("malformed_signature")
    for secret in secrets:
        expected = standard_webhooks_signature(standard_webhooks_key(secret), msg_id, timestamp, body)
        if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
            return msg_id
    raise SignatureError("bad_signature")
