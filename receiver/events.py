"""Inbound events: Kallglot webhook envelopes (both documented shapes) and telephony call-ended bodies.

Parsing is strict where we act (ids, types, session ids) and lenient elsewhere, because Kallglot
documents two versions of its payloads. Anything we cannot act on safely is an ``InvalidEvent``
(HTTP 400); a well-formed event of a type we do not handle is parsed and then ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from receiver import jsonsafe, kallglot_answers
from receiver.kallglot_answers import Analysis

SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
ANALYSIS_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
EVENT_ID_MAX = 256
MAX_DURATION_SECONDS = 7 * 86400

SESSION_END_TYPES = ("session.ended", "transcript.ready", "session.provider.disconnected")
ANALYSIS_TYPES = ("analysis.complete", "analysis.completed", "analysis.failed")


class InvalidEvent(Exception):
    """Signed (or otherwise authenticated) but not an event we can accept (HTTP 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _loads(body: bytes) -> dict[str, Any]:
    try:
        # Refused here, or made safe here: never a row that a store refuses on every retry.
        data = jsonsafe.loads(body, strict=True)
    except jsonsafe.UnsafeJSON as exc:
        raise InvalidEvent(str(exc)) from None
    if not isinstance(data, dict):
        raise InvalidEvent("body must be a JSON object")
    return data


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A JSON object body under the same rules as every inbound event (no NaN, no NUL)."""
    return _loads(body)


def _session_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not SESSION_ID.match(value):
        raise InvalidEvent(f"{where} must be a session id such as sess_01HXYZ")
    return value


@dataclass(frozen=True)
class KallglotEvent:
    """One Kallglot webhook event, reduced to what the receiver acts on."""

    id: str
    type: str
    session_id: str | None = None
    analysis_id: str | None = None
    #: The analysis when the event carries a full result; None means "fetch it".
    analysis: Analysis | None = None
    duration_seconds: float | None = None
    data: dict[str, Any] = field(default_factory=dict)


def parse_kallglot_event(body: bytes) -> KallglotEvent:
    """Parse a verified ``POST /webhooks/kallglot`` body."""
    envelope = _loads(body)
    event_id, event_type, data = envelope.get("id"), envelope.get("type"), envelope.get("data")
    if not isinstance(event_id, str) or not event_id or len(event_id) > EVENT_ID_MAX:
        raise InvalidEvent("id must be a non-empty string (evt_…)")
    if not isinstance(event_type, str) or not event_type or len(event_type) > 100:
        raise InvalidEvent("type must be a non-empty string")
    if not isinstance(data, dict):
        raise InvalidEvent("data must be an object")
    if event_type in SESSION_END_TYPES:
        return _session_event(event_id, event_type, data)
    if event_type in ANALYSIS_TYPES:
        return _analysis_event(event_id, event_type, data)
    return KallglotEvent(id=event_id, type=event_type, data=data)


def _session_event(event_id: str, event_type: str, data: dict[str, Any]) -> KallglotEvent:
    # session.ended carries the session object (data.id); transcript.ready may carry a transcript
    # object whose session is data.session_id.
    raw = (
        data.get("session_id")
        if event_type == "transcript.ready" and "session_id" in data
        else data.get("id")
    )
    if raw is None:
        raw = data.get("session_id")
    session_id = _session_id(raw, "data.id")
    duration = data.get("duration_seconds", data.get("duration"))
    if isinstance(duration, bool) or not isinstance(duration, int | float | None):
        raise InvalidEvent("data.duration must be a number")
    if duration is not None and not 0 <= duration <= MAX_DURATION_SECONDS:
        # Nonsense, but Kallglot's: the call is kept and its duration taken as unknown (the
        # session is asked when it matters), rather than handlers failing on it (1e308 s is no
        # millisecond count HubSpot takes) on every attempt.
        duration = None
    return KallglotEvent(
        id=event_id,
        type=event_type,
        session_id=session_id,
        duration_seconds=float(duration) if duration is not None else None,
        data=data,
    )


def _analysis_event(event_id: str, event_type: str, data: dict[str, Any]) -> KallglotEvent:
    analysis_id = data.get("id", data.get("analysis_id"))
    if not isinstance(analysis_id, str) or not ANALYSIS_ID.match(analysis_id):
        raise InvalidEvent("data.id must be an analysis id such as anl_01HDEF")
    session_raw = data.get("session_id")
    session_id = _session_id(session_raw, "data.session_id") if session_raw is not None else None
    status = data.get("status")
    if status is not None and not isinstance(status, str):
        raise InvalidEvent("data.status must be a string")
    if status is None:
        status = "failed" if event_type == "analysis.failed" else "completed"
    full = kallglot_answers.analysis(data, status=status).has_result
    return KallglotEvent(
        id=event_id,
        type=event_type,
        session_id=session_id,
        analysis_id=analysis_id,
        analysis=kallglot_answers.analysis(data) if full else None,
        data=data,
    )


class Agent(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    id: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)


class CallEnded(BaseModel):
    """The telephony side's ``POST /events/call-ended`` body (CONTRACT §4); only session_id is required."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    session_id: str
    call_id: str | None = Field(default=None, max_length=200)
    ended_at: str | None = Field(default=None, max_length=64)
    duration_seconds: float | None = Field(default=None, ge=0, le=MAX_DURATION_SECONDS)
    direction: Literal["inbound", "outbound"] | None = None
    from_: str | None = Field(default=None, alias="from", max_length=64)
    to: str | None = Field(default=None, max_length=64)
    agent: Agent | None = None
    metadata: dict[str, Any] | None = None
    end_session: bool = False

    @field_validator("session_id")
    @classmethod
    def _session(cls, value: str) -> str:
        if not SESSION_ID.match(value):
            raise ValueError("must be a session id such as sess_01HXYZ")
        return value

    @field_validator("ended_at")
    @classmethod
    def _ended_at(cls, value: str | None) -> str | None:
        # Handlers turn it into dates and epoch milliseconds: a value they cannot convert would
        # fail every delivery attempt, so it is refused here.
        if value is not None:
            jsonsafe.iso_datetime(value)
        return value

    def call_fields(self) -> dict[str, Any]:
        """The fields that travel with the call to every handler (unset ones left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, exclude={"session_id", "end_session"})


def parse_call_ended(body: bytes) -> CallEnded:
    data = _loads(body)
    try:
        return CallEnded.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "body"
        raise InvalidEvent(f"{where}: {error['msg']}") from None
