"""Admin views shared by ``/admin/*`` and the CLI: a call as JSON, dead letters, time filters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from receiver.store import CallRecord, DeliveryRecord


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts is not None else None


def parse_since(value: str | None) -> float | None:
    """``since`` as Unix seconds or ISO-8601 (``2026-03-26T11:00:00Z``); ValueError if neither."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            "since must be Unix seconds or an ISO-8601 time such as 2026-03-26T11:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def delivery_view(d: DeliveryRecord) -> dict[str, Any]:
    return {
        "id": d.id,
        "session_id": d.session_id,
        "handler": d.handler,
        "event": d.status,
        "state": d.state.value,
        "attempts": d.attempts,
        "replays": d.replays,
        "last_error": d.last_error,
        "created_at": iso(d.created_at),
        "next_attempt_at": iso(d.next_at) if d.state.value == "pending" else None,
        "delivered_at": iso(d.delivered_at),
        "dead_at": iso(d.dead_at),
    }


def call_view(call: CallRecord, deliveries: list[DeliveryRecord]) -> dict[str, Any]:
    analysis_status = call.analysis.get("status") if call.analysis else None
    return {
        "session_id": call.session_id,
        "state": call.state.value,
        "reason": call.reason,
        "analysis_id": call.analysis_id,
        "analysis_status": analysis_status,
        "finished_via": call.finished_via,
        "start_attempts": call.attempts,
        "polls": call.polls,
        "call": call.fields,
        "timestamps": {
            "received_at": iso(call.received_at),
            "started_at": iso(call.started_at),
            "finished_at": iso(call.finished_at),
            "delivered_at": iso(call.delivered_at),
            "updated_at": iso(call.updated_at),
        },
        "deliveries": [delivery_view(d) for d in deliveries],
    }
