"""Twilio Voice status callbacks: ``X-Twilio-Signature`` and the form fields we act on; pure.

Twilio signs ``HMAC-SHA1(auth token, URL + every POST parameter name and value, sorted by name)``,
Base64-encoded, where URL is the full URL it requested (scheme, host, path and query string). We
verify it ourselves in ~40 lines rather than through the ``twilio`` package, whose request validator
is these same lines behind a 2.5 MB SDK with ``requests``/``aiohttp`` dependencies; the tests check
this code against the examples Twilio publishes for its own validator.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from receiver.events import InvalidEvent
from receiver.signing import SignatureError
from receiver.store.carrier_port import CarrierEvent, LegKind

SOURCE = "twilio"
LIVE = frozenset({"queued", "initiated", "ringing", "in-progress", "answered"})
SKIPPED = frozenset({"busy", "failed", "no-answer", "canceled"})
_CALL_SID = re.compile(r"^[A-Za-z0-9]{2,64}$")


def signature(token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """The ``X-Twilio-Signature`` Twilio would send for this URL and these form parameters."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _url_variants(url: str) -> list[str]:
    """The URL as given, and with the default port added or removed (Twilio's SDKs accept both)."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if parts.port is None and default is not None:
        other = parts._replace(netloc=f"{parts.netloc}:{default}")
    elif parts.port == default:
        other = parts._replace(netloc=parts.netloc.rsplit(":", 1)[0])
    else:
        return [url]
    return [url, urlunsplit(other)] if host else [url]


def verify(header: str | None, token: str, url: str, params: list[tuple[str, str]]) -> None:
    """Raise SignatureError unless ``header`` is Twilio's signature of this request."""
    if not header:
        raise SignatureError("missing_signature")
    for candidate in _url_variants(url):
        if hmac.compare_digest(signature(token, candidate, params).encode(), header.strip().encode()):
            return
    raise SignatureError("bad_signature")


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _iso(value: str | None) -> str | None:
    """Twilio's ``Timestamp`` (RFC 2822) as ISO-8601 UTC, like the other carriers' times."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return value[:64]
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse(params: dict[str, str], idempotency_token: str | None, session_id: str | None) -> CarrierEvent:
    """A verified status callback as a carrier event (session from the URL, else ``session_id``)."""
    call_sid, status = params.get("CallSid", ""), params.get("CallStatus", "")
    if not _CALL_SID.match(call_sid):
        raise InvalidEvent("CallSid must be a Twilio call sid such as CA0123…")
    if not status or len(status) > 32:
        raise InvalidEvent("CallStatus is required")
    event_id = idempotency_token or f"{call_sid}:{status}:{params.get('SequenceNumber', '')}"
    if len(event_id) > 256:
        raise InvalidEvent("I-Twilio-Idempotency-Token is longer than 256 characters")
    direction = params.get("Direction", "")
    call: dict[str, Any] = {
        "carrier": SOURCE,
        "carrier_call_id": call_sid,
        "from": params.get("From") or params.get("Caller"),
        "to": params.get("To") or params.get("Called"),
        "direction": "outbound" if direction.startswith("outbound") else ("inbound" if direction else None),
        "duration_seconds": _number(params.get("CallDuration")),
        "hangup_cause": status if status not in LIVE else None,
        "ended_at": _iso(params.get("Timestamp")) if status not in LIVE else None,
        "carrier_status": status,
        "parent_call_id": params.get("ParentCallSid"),
    }
    kind = LegKind.ENDED if status == "completed" else LegKind.SKIPPED if status in SKIPPED else LegKind.LIVE
    return CarrierEvent(
        source=SOURCE,
        event_id=event_id,
        carrier_call_id=call_sid,
        session_id=session_id or params.get("session_id") or None,
        kind=kind,
        status=status,
        call={key: value for key, value in call.items() if value is not None},
        reason=f"twilio CallStatus={status}" if kind is LegKind.SKIPPED else None,
    )
