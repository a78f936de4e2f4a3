"""Read a delivery document's analysis in either Kallglot shape (NEW flat, OLD ``results``).

Every handler renders the same few facts; this module is where the two documented analysis shapes
(kallglot-api.md §2) and the optional call fields are turned into plain values. Everything here is
pure and total: any part of the document may be missing (``fields`` narrowing, failed analyses,
older payloads), and then the answer is ``None`` / empty, never an exception.

API (all take the plain dicts of CONTRACT §8):

- ``status(analysis) -> str | None``: ``completed`` / ``failed`` / ``processing`` (OLD ``complete``
  and ``queued`` are normalised), any other value lower-cased, ``None`` when absent.
- ``summary(analysis) -> str | None``: NEW ``summary`` string, or OLD ``results.summary.brief``.
- ``sentiment(analysis) -> dict[str, str]``: NEW ``{"customer": …, "agent": …}`` free text, or
  OLD ``{"label": "positive", "score": "0.72", "trend": "improving"}``.
- ``compliance(analysis) -> (status, [flag descriptions])``.
- ``score(analysis) -> float | None``: performance score in 0..1 (OLD ``quality.score`` / 100).
- ``error(analysis) -> str | None``: the failure explanation of a failed analysis.
- ``customer_phone(call) -> str | None``: inbound ``from``, outbound ``to``, else ``phone_number``.
- ``duration(seconds) -> str | None``: ``"4m 05s"`` for display.
- ``duration_seconds(call) -> float | None``, ``direction(call) -> "inbound" | "outbound" | None``,
  ``ended_at(call, fallback) -> datetime`` (timezone-aware; naive times are UTC): call fields as
  the CRM handlers record them.
- ``title(document) -> str``: one line naming the call, e.g. ``Call analysis: inbound call from +1…``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "compliance",
    "customer_phone",
    "direction",
    "duration",
    "duration_seconds",
    "ended_at",
    "error",
    "is_failed",
    "score",
    "sentiment",
    "status",
    "summary",
    "title",
]

_STATUS_ALIASES = {"complete": "completed", "queued": "processing"}
# Keys tried, in order, to describe a compliance flag whose element shape is undocumented.
_FLAG_TEXT_KEYS = ("description", "message", "reason", "title", "label", "name", "rule", "type", "code")


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str | None:
    if isinstance(value, str):
        stripped = value.strip()
        return stripped or None
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _part(analysis: Mapping[str, Any] | None, key: str) -> Any:
    """A result part from the NEW flat shape, falling back to OLD ``results.<key>``."""
    analysis = _mapping(analysis)
    value = analysis.get(key)
    if value is None:
        value = _mapping(analysis.get("results")).get(key)
    return value


def status(analysis: Mapping[str, Any] | None) -> str | None:
    """The analysis status, normalised across shapes (``complete`` -> ``completed``)."""
    raw = _text(_mapping(analysis).get("status"))
    if raw is None:
        return None
    lowered = raw.lower()
    return _STATUS_ALIASES.get(lowered, lowered)


def summary(analysis: Mapping[str, Any] | None) -> str | None:
    """The natural-language summary (NEW string, OLD ``results.summary.brief``)."""
    value = _part(analysis, "summary")
    if isinstance(value, Mapping):
        return _text(value.get("brief")) or _text(value.get("text"))
    return _text(value)


def sentiment(analysis: Mapping[str, Any] | None) -> dict[str, str]:
    """Per-party sentiment text (NEW) or overall label/score/trend (OLD), as display strings."""
    value = _part(analysis, "sentiment")
    if isinstance(value, str):
        text = _text(value)
        return {"overall": text} if text else {}
    value = _mapping(value)
    out: dict[str, str] = {}
    for party in ("customer", "agent"):
        text = _text(value.get(party))
        if text:
            out[party] = text
    label = _text(value.get("label"))
    if label:
        out["label"] = label
    overall = _number(value.get("overall"))
    if overall is None:
        overall = _number(value.get("score"))
    if overall is not None:
        out["score"] = f"{overall:g}"
    trend = _text(value.get("trend"))
    if trend:
        out["trend"] = trend
    return out


def _flag_text(flag: object) -> str | None:
    if isinstance(flag, str):
        return _text(flag)
    if isinstance(flag, Mapping):
        for key in _FLAG_TEXT_KEYS:
            text = _text(flag.get(key))
            if text:
                severity = _text(flag.get("severity"))
                return f"{text} ({severity})" if severity else text
        return json.dumps(flag, sort_keys=True, default=str) if flag else None
    if flag is None:
        return None
    return str(flag)


def compliance(analysis: Mapping[str, Any] | None) -> tuple[str | None, list[str]]:
    """``(status, flag descriptions)``; flags may be strings or objects (their shape is undocumented)."""
    value = _mapping(_part(analysis, "compliance"))
    raw_flags = value.get("flags")
    flags: list[str] = []
    if isinstance(raw_flags, list):
        flags = [text for text in (_flag_text(flag) for flag in raw_flags) if text]
    state = _text(value.get("status"))
    return (state.lower() if state else None), flags


def score(analysis: Mapping[str, Any] | None) -> float | None:
    """Performance score in 0..1: NEW ``performance.score``, OLD ``results.quality.score`` / 100."""
    value = _number(_mapping(_part(analysis, "performance")).get("score"))
    if value is None:
        value = _number(_mapping(_part(analysis, "quality")).get("score"))
        if value is not None:
            value /= 100
    elif 1 < value <= 100:  # a percentage slipped into the NEW field
        value /= 100
    if value is None or not 0 <= value <= 1:
        return None
    return value


def error(analysis: Mapping[str, Any] | None) -> str | None:
    """The plain-text failure explanation (a string, or an object with ``message``)."""
    value = _mapping(analysis).get("error")
    if isinstance(value, Mapping):
        return _text(value.get("message")) or _text(value.get("code"))
    return _text(value)


def customer_phone(call: Mapping[str, Any] | None) -> str | None:
    """The customer's number: inbound ``from``, outbound ``to``, otherwise ``phone_number``."""
    call = _mapping(call)
    direction = (_text(call.get("direction")) or "").lower()
    if direction == "inbound":
        found = _text(call.get("from"))
    elif direction == "outbound":
        found = _text(call.get("to"))
    else:
        found = None
    return found or _text(call.get("phone_number"))


def duration(seconds: object) -> str | None:
    """``245.3`` -> ``"4m 05s"``; ``3725`` -> ``"1h 02m 05s"``; ``None`` for anything else."""
    value = _number(seconds)
    if value is None or value < 0:
        return None
    total = round(value)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def duration_seconds(call: Mapping[str, Any] | None) -> float | None:
    """The call's ``duration_seconds`` when it is a finite number >= 0."""
    value = _number(_mapping(call).get("duration_seconds"))
    return value if value is not None and value >= 0 else None


def direction(call: Mapping[str, Any] | None) -> str | None:
    """``inbound`` or ``outbound`` (in any case in the event), else ``None``."""
    value = (_text(_mapping(call).get("direction")) or "").lower()
    return value if value in ("inbound", "outbound") else None


def ended_at(call: Mapping[str, Any] | None, fallback: datetime) -> datetime:
    """The call's ISO 8601 ``ended_at``, else ``fallback``; a time without a zone is taken as UTC.

    A value that is not a date, or whose UTC moment or epoch time is out of range (year 9999 at
    UTC-5, say), is dropped for ``fallback``: raising here would fail the delivery on every attempt.
    """
    raw = _mapping(call).get("ended_at")
    for candidate in (raw, fallback):
        moment = _moment(candidate)
        if moment is not None:
            return moment
    return datetime.now(UTC)


def _moment(value: object) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:
        moment.astimezone(UTC)
        moment.timestamp()
    except (OverflowError, ValueError):
        return None
    return moment


def is_failed(document: Mapping[str, Any] | None) -> bool:
    """True for a ``call.analysis.failed`` document (or a failed analysis object)."""
    document = _mapping(document)
    if document.get("type") == "call.analysis.failed":
        return True
    return status(_mapping(document.get("analysis"))) == "failed"


def title(document: Mapping[str, Any] | None) -> str:
    """One line naming the call, e.g. ``Call analysis: inbound call from +14155550100``."""
    document = _mapping(document)
    call = _mapping(document.get("call"))
    prefix = "Call analysis failed" if is_failed(document) else "Call analysis"
    direction = (_text(call.get("direction")) or "").lower()
    caller, callee = _text(call.get("from")), _text(call.get("to"))
    if direction == "inbound" and caller:
        what = f"inbound call from {caller}"
    elif direction == "outbound" and callee:
        what = f"outbound call to {callee}"
    elif caller and callee:
        what = f"call from {caller} to {callee}"
    elif phone := customer_phone(call) or caller or callee:
        what = f"call with {phone}"
    elif session_id := _text(document.get("session_id")):
        what = f"session {session_id}"
    else:
        return prefix
    return f"{prefix}: {what}"
