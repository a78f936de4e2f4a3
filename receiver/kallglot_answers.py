"""Kallglot's answers as typed values: the only place that reads Kallglot's JSON fields.

Both documented shapes (NEW and OLD) are read here, and the analysis status is normalised here
once (``complete`` -> ``completed``, ``queued`` -> ``processing``). The raw document is kept as
``document``: it is what the store keeps and what handlers receive, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from receiver.lifecycle import CallState

Status = Literal["processing", "completed", "failed"]

_STATUSES: dict[str, Status] = {
    "completed": "completed",
    "complete": "completed",
    "failed": "failed",
}
_CARRIER_CALL_ID_KEYS = ("call_sid", "call_control_id", "provider_call_id")
_RESULT_KEYS = ("summary", "sentiment", "compliance", "keywords", "performance", "results")


def normalise_status(raw: object) -> Status:
    """Kallglot's analysis status in our words; anything not finished is ``processing``."""
    return _STATUSES.get(raw, "processing") if isinstance(raw, str) else "processing"


@dataclass(frozen=True)
class Analysis:
    """An analysis as Kallglot describes it (``GET /analyses/{id}``, a start answer, a webhook)."""

    id: str | None
    session_id: str | None
    status: Status
    error: str | None
    document: dict[str, Any]
    request_id: str | None = None

    @property
    def state(self) -> CallState | None:
        """The finished call state, None while Kallglot is still working."""
        if self.status == "completed":
            return CallState.COMPLETED
        if self.status == "failed":
            return CallState.FAILED
        return None

    @property
    def has_result(self) -> bool:
        """True when the document carries its result (so no GET is needed)."""
        if self.status == "failed":
            return "error" in self.document
        if self.status == "completed":
            return any(key in self.document for key in _RESULT_KEYS)
        return False


@dataclass(frozen=True)
class StartedAnalysis:
    """The answer to ``POST /sessions/{id}/analysis``: the analysis id, perhaps already finished."""

    id: str
    analysis: Analysis
    request_id: str | None = None

    @property
    def status(self) -> Status:
        return self.analysis.status


@dataclass(frozen=True)
class SessionInfo:
    """A session as Kallglot describes it (``GET /sessions/{id}``, ``POST .../end``, session events)."""

    id: str | None
    duration_seconds: float | None
    phone_number: str | None
    #: None when the session carries no metadata object.
    metadata: dict[str, Any] | None
    carrier_call_ids: tuple[str, ...]
    document: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None


def analysis(document: dict[str, Any], *, request_id: str | None = None, status: object = None) -> Analysis:
    """Read an analysis document (``status`` overrides the document's own, e.g. from an event type)."""
    analysis_id = document.get("id", document.get("analysis_id"))
    session_id = document.get("session_id")
    normalised = normalise_status(document.get("status") if status is None else status)
    error = document.get("error")
    return Analysis(
        id=analysis_id if isinstance(analysis_id, str) else None,
        session_id=session_id if isinstance(session_id, str) else None,
        status=normalised,
        error=str(error)[:500] if normalised == "failed" and error else None,
        document=document,
        request_id=request_id,
    )


def session(document: dict[str, Any], *, request_id: str | None = None) -> SessionInfo:
    """Read a session document (NEW ``duration_seconds`` or OLD ``duration``)."""
    duration = document.get("duration_seconds", document.get("duration"))
    phone = document.get("phone_number")
    metadata = document.get("metadata")
    session_id = document.get("id")
    return SessionInfo(
        id=session_id if isinstance(session_id, str) else None,
        duration_seconds=float(duration)
        if isinstance(duration, int | float) and not isinstance(duration, bool)
        else None,
        phone_number=phone if isinstance(phone, str) and phone else None,
        metadata=metadata if isinstance(metadata, dict) else None,
        carrier_call_ids=carrier_call_ids(document),
        document=document,
        request_id=request_id,
    )


def carrier_call_ids(data: dict[str, Any]) -> tuple[str, ...]:
    """Carrier call ids in Kallglot session data: ``provider.{call_sid,call_control_id}`` (OLD
    session shape) or the same keys at the top level (``session.provider.*`` events)."""
    found: list[str] = []
    for where in (data.get("provider"), data):
        if isinstance(where, dict):
            for key in _CARRIER_CALL_ID_KEYS:
                value = where.get(key)
                if isinstance(value, str) and 0 < len(value) <= 200 and value not in found:
                    found.append(value)
    return tuple(found)
