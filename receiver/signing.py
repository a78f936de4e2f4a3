"""Webhook signatures: Kallglot-Signature and Standard Webhooks, verify and sign; pure.

Kallglot signs ``"{t}.{raw body}"`` with HMAC-SHA256 (lowercase hex) and sends
``Kallglot-Signature: t=<unix>,v1=<hex>``. Standard Webhooks (https://www.standardwebhooks.com)
signs ``"{webhook-id}.{webhook-timestamp}.{raw body}"`` with HMAC-SHA256 (base64) keyed with the
base64 part of a ``whsec_…`` secret and sends ``webhook-signature: v1,<b64> [v1,<b64> …]``.

Both verifiers accept several secrets (rotation), several signatures in one header, check the
timestamp against a tolerance window with an injected clock, and compare in constant time.
Errors carry a reason for logs and metrics but never a secret or a signature.

The verifiers take any header text (or raw header bytes) and raise nothing but SignatureError:
a candidate that is not 64 hex digits (Kallglot) or base64 of 32 bytes (Standard Webhooks) is
never compared, digests are compared as bytes, and a timestamp is at most 15 ASCII digits (a
longer one would overflow the float arithmetic of the tolerance check).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence

Clock = Callable[[], float]
Header = str | bytes

_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_B64_DIGEST = re.compile(r"[A-Za-z0-9+/]{43}=")


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
    header: Header | None,
    body: bytes,
    secrets: Sequence[str],
    *,
    tolerance_seconds: float,
    now: float,
) -> int:
    """Check a ``Kallglot-Signature`` header; return its timestamp or raise SignatureError."""
    text = _text(header)
    if not text:
        raise SignatureError("missing_signature")
    timestamp: int | None = None
    candidates: list[bytes] = []
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamp = _timestamp(value)
        elif key == "v1" and _HEX_DIGEST.fullmatch(value.strip()):
            candidates.append(bytes.fromhex(value.strip()))
    if timestamp is None or not candidates:
        raise SignatureError("malformed_signature")
    _check_age(timestamp, now, tolerance_seconds)
    signed = str(timestamp).encode() + b"." + body
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
        if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
            return timestamp
    raise SignatureError("bad_signature")


def _text(header: Header | None) -> str:
    """Header text as sent (HTTP header bytes are Latin-1 on the wire)."""
    if header is None:
        return ""
    return header.decode("latin-1") if isinstance(header, bytes) else header


def _timestamp(value: str) -> int:
    if not _TIMESTAMP.fullmatch(value.strip()):
        raise SignatureError("malformed_signature")
    return int(value.strip())


def _check_age(timestamp: int, now: float, tolerance_seconds: float) -> None:
    if abs(now - timestamp) > tolerance_seconds:
        raise SignatureError("stale_signature")


# --- Standard Webhooks ----------------------------------------------------------------------

_WHSEC_PREFIX = "whsec_"


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_<base64>``; a bare base64 also works)."""
    encoded = secret.removeprefix(_WHSEC_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a Standard Webhooks secret must be 'whsec_' followed by base64") from None


def _standard_digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    # surrogatepass: the id is whatever text the caller holds; it is signed, never interpreted.
    signed = f"{msg_id}.{timestamp}.".encode("utf-8", "surrogatepass") + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def standard_webhooks_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    return base64.b64encode(_standard_digest(key, msg_id, timestamp, body)).decode()


def sign_standard_webhooks(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``."""
    signature = standard_webhooks_signature(standard_webhooks_key(secret), msg_id, timestamp, body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
    }


def verify_standard_webhooks(
    headers: Mapping[str, Header],
    body: bytes,
    secrets: Sequence[str],
    *,
    tolerance_seconds: float,
    now: float,
) -> str:
    """Check the Standard Webhooks headers; return the ``webhook-id`` or raise SignatureError."""
    msg_id = _text(headers.get("webhook-id"))
    raw_timestamp = _text(headers.get("webhook-timestamp"))
    header = _text(headers.get("webhook-signature"))
    if not msg_id or not raw_timestamp or not header:
        raise SignatureError("missing_signature")
    timestamp = _timestamp(raw_timestamp)
    _check_age(timestamp, now, tolerance_seconds)
    candidates = []
    for part in header.split():
        version, sep, value = part.partition(",")
        if sep and version == "v1" and _B64_DIGEST.fullmatch(value):
            candidates.append(base64.b64decode(value))
    if not candidates:
        raise SignatureError("malformed_signature")
    for secret in secrets:
        expected = _standard_digest(standard_webhooks_key(secret), msg_id, timestamp, body)
        if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
            return msg_id
    raise SignatureError("bad_signature")
