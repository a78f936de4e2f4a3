"""Any PBX on ``/events/call-ended``: a JMESPath field mapping and an optional static bearer token.

``RECEIVER_CALL_ENDED_MAPPING`` maps our fields (CONTRACT §4 body) to JMESPath expressions over the
platform's own hang-up JSON, so Asterisk, FreeSWITCH or a contact-centre platform can POST what it
already sends. Without a mapping the body is ours, unchanged. ``RECEIVER_INBOUND_BEARER_TOKEN``
lets a platform that cannot sign Standard Webhooks authenticate with ``Authorization: Bearer``; its
retries are deduplicated on ``webhook-id``/``Idempotency-Key`` when sent, else on the body's hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

from receiver.events import CallEnded, InvalidEvent, parse_call_ended, parse_json_object
from receiver.signing import SignatureError, verify_standard_webhooks

FIELDS = frozenset(
    {"session_id", "call_id", "ended_at", "duration_seconds", "direction", "from", "to", "agent", "metadata",
     "end_session"}
)  # fmt: skip


def compile_mapping(mapping: Mapping[str, str]) -> dict[str, ParsedResult]:
    """Compile the mapping; ValueError names the field that is wrong."""
    if not isinstance(mapping, Mapping) or "session_id" not in mapping:
        raise ValueError("must map at least session_id to a JMESPath expression")
    compiled: dict[str, ParsedResult] = {}
    for name, expression in mapping.items():
        if name not in FIELDS:
            raise ValueError(f"unknown field {name!r}; allowed: {', '.join(sorted(FIELDS))}")
        try:
            compiled[name] = jmespath.compile(str(expression))
        except JMESPathError as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"{name}: not a JMESPath expression ({first_line})") from None
    return compiled


@dataclass(frozen=True)
class PbxConfig:
    mapping: dict[str, ParsedResult] | None
    bearer_token: str | None
    secrets: list[str]
    tolerance_seconds: float

    @property
    def enabled(self) -> bool:
        return bool(self.secrets or self.bearer_token)

    def authenticate(self, headers: Mapping[str, str], body: bytes, now: float) -> str:
        """The event id to deduplicate on, once the request proved who sent it."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if self.bearer_token is not None and scheme.lower() == "bearer":
            if not hmac.compare_digest(token.strip().encode(), self.bearer_token.encode()):
                raise SignatureError("bad_token")
            given = headers.get("webhook-id") or headers.get("idempotency-key")
            return given or "sha256:" + hashlib.sha256(body).hexdigest()
        if not self.secrets:
            raise SignatureError("missing_token")
        return verify_standard_webhooks(
            headers, body, self.secrets, tolerance_seconds=self.tolerance_seconds, now=now
        )

    def parse(self, body: bytes) -> CallEnded:
        if self.mapping is None:
            return parse_call_ended(body)
        data = parse_json_object(body)
        mapped: dict[str, Any] = {}
        for name, expression in self.mapping.items():
            try:
                value = expression.search(data)
            except JMESPathError:
                value = None
            if value is not None:
                mapped[name] = value
        if "session_id" not in mapped:
            raise InvalidEvent("the mapping found no session_id in the body")
        if isinstance(mapped.get("duration_seconds"), str):
            try:
                mapped["duration_seconds"] = float(mapped["duration_seconds"])
            except ValueError:
                raise InvalidEvent("duration_seconds: the mapped value is not a number") from None
        return parse_call_ended(json.dumps(mapped).encode())
