"""Synthetic but deterministic Kallglot content (sessions, transcripts, results) from a session id."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Include = Literal["summary", "sentiment", "compliance", "keywords", "performance"]
INCLUDE_VALUES: tuple[Include, ...] = ("summary", "sentiment", "compliance", "keywords", "performance")

_SUMMARIES = (
    "Customer checked order status; agent confirmed the new ship date.",
    "Customer asked to change the delivery address; agent updated it and sent a confirmation.",
    "Customer reported a billing error; agent issued a refund for the duplicate charge.",
    "Customer asked about the warranty; agent explained coverage and opened a repair ticket.",
)
_KEYWORDS = (
    ["order", "shipping", "delivery date"],
    ["address change", "delivery", "confirmation"],
    ["billing", "refund", "duplicate charge"],
    ["warranty", "repair", "ticket"],
)
_TOPICS = ("order_status", "address_change", "billing", "warranty")
_CUSTOMER_MOOD = (
    "Neutral, slightly anxious early; satisfied after confirmation.",
    "Friendly and patient throughout.",
    "Frustrated at first; calmer once the refund was confirmed.",
    "Curious and cooperative.",
)
_REVIEW_FLAGS = (
    {"code": "missing_disclosure", "severity": "medium", "message": "Recording disclosure not given."},
    {"code": "pii_shared", "severity": "high", "message": "Full card number read aloud."},
)


def iso(ts: float) -> str:
    """An ISO-8601 UTC timestamp with a ``Z``, as Kallglot writes them."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Facts:
    """What the sandbox pretends happened on a call, derived only from its session id."""

    variant: int
    duration: float
    phone_number: str
    needs_review: bool
    score: float


def facts(session_id: str) -> Facts:
    digest = hashlib.sha256(session_id.encode()).digest()
    n = int.from_bytes(digest[:8], "big")
    return Facts(
        variant=n % len(_SUMMARIES),
        duration=round(30 + (n >> 8) % 5700 / 10, 1),
        phone_number=f"+1415555{(n >> 24) % 10000:04d}",
        # about one call in four, and any id that says so, needs a compliance review
        needs_review="review" in session_id or (n >> 40) % 4 == 0,
        score=round(0.5 + (n >> 48) % 49 / 100, 2),
    )


def session_object(
    session_id: str, ended_at: float, provider: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The session; ``provider`` (the carrier leg, when one is set for it) replaces the plain string."""
    f = facts(session_id)
    started_at = ended_at - f.duration
    leg: Any = "twilio"
    if provider is not None:
        leg = {k: v for k, v in provider.items() if v is not None}
        leg.setdefault("phone_number", f.phone_number)
    return {
        "id": session_id,
        "object": "session",
        "status": "ended",
        "mode": "bidirectional_translation",
        "provider": leg,
        "phone_number": f.phone_number,
        "source_language": "de",
        "target_language": "en",
        "recording": {"enabled": True},
        "metadata": {"sandbox": "true"},
        "duration": f.duration,
        "created_at": iso(started_at - 15),
        "started_at": iso(started_at),
        "ended_at": iso(ended_at),
    }


def end_summary(session_id: str, ended_at: float) -> dict[str, Any]:
    return {
        "id": session_id,
        "object": "session",
        "status": "ended",
        "duration_seconds": facts(session_id).duration,
        "ended_at": iso(ended_at),
    }


def transcript_object(session_id: str, ended_at: float, *, ready: bool) -> dict[str, Any]:
    f = facts(session_id)
    start = ended_at - f.duration
    lines = (
        ("agent", "en", "Hello, how can I help you?", None),
        ("customer", "de", "Ich habe eine Frage zu meiner Bestellung.", "I have a question about my order."),
        ("agent", "en", "Of course. Let me look that up for you.", None),
        ("customer", "de", "Vielen Dank, das hilft mir sehr.", "Thank you, that helps a lot."),
    )
    turns: list[dict[str, Any]] = []
    for i, (speaker, language, text, translation) in enumerate(lines):
        turn: dict[str, Any] = {
            "sequence": i + 1,
            "speaker": speaker,
            "language": language,
            "text": text,
            "timestamp": iso(start + 15 + i * f.duration / (len(lines) + 1)),
        }
        if translation is not None:
            turn["translation"] = {"language": "en", "text": translation}
        turns.append(turn)
    return {
        "id": f"trn_{session_id}",
        "object": "transcript",
        "session_id": session_id,
        "status": "completed" if ready else "in_progress",
        "turns": turns,
        "metadata": {
            "total_turns": len(turns),
            "duration_seconds": f.duration,
            "languages_detected": ["en", "de"],
        },
    }


def new_results(session_id: str, include: tuple[str, ...]) -> dict[str, Any]:
    """The NEW flat result fields, only those ``include`` asked for."""
    f = facts(session_id)
    out: dict[str, Any] = {}
    if "summary" in include:
        out["summary"] = _SUMMARIES[f.variant]
    if "sentiment" in include:
        out["sentiment"] = {
            "customer": _CUSTOMER_MOOD[f.variant],
            "agent": "Calm and solution-oriented throughout.",
        }
    if "compliance" in include:
        out["compliance"] = (
            {"status": "review", "flags": list(_REVIEW_FLAGS[: 1 + f.variant % 2])}
            if f.needs_review
            else {"status": "ok", "flags": []}
        )
    if "keywords" in include:
        out["keywords"] = list(_KEYWORDS[f.variant])
    if "performance" in include:
        out["performance"] = {"score": f.score}
    return out


def old_results(session_id: str, include: tuple[str, ...]) -> dict[str, Any]:
    """The OLD ``results`` wrapper (numeric sentiment, ``quality``, ``topics``) for the same call."""
    f = facts(session_id)
    out: dict[str, Any] = {}
    if "sentiment" in include:
        overall = round(f.score - 0.2, 2)
        out["sentiment"] = {
            "overall": overall,
            "label": "positive" if overall > 0.4 else "neutral",
            "trend": "improving",
            "segments": [{"id": "seg_001", "score": 0.1, "label": "neutral"}],
            "key_moments": [
                {"segment_id": "seg_003", "type": "positive_peak", "description": "Issue resolved"}
            ],
        }
    if "summary" in include:
        out["summary"] = {
            "brief": _SUMMARIES[f.variant],
            "key_points": list(_KEYWORDS[f.variant]),
            "outcome": "resolved",
        }
        out["action_items"] = [
            {
                "description": "Send a follow-up email",
                "assignee": "agent",
                "due_date": None,
                "priority": "high",
            }
        ]
    if "performance" in include:
        out["quality"] = {
            "score": round(f.score * 100),
            "talk_ratio": {"agent": 55, "customer": 45},
            "interruptions": 1,
            "average_response_time": 1.2,
            "hold_time": 0,
            "dead_air_instances": 0,
        }
    if "keywords" in include:
        out["topics"] = [{"name": _TOPICS[f.variant], "confidence": 0.95}]
    if "compliance" in include:
        out["compliance"] = new_results(session_id, ("compliance",))["compliance"]
    return out
