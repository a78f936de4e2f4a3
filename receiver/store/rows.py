"""Rows to records, shared by every backend (a row is anything indexable by column name)."""

from __future__ import annotations

import functools
import json
from typing import Any, Protocol

from receiver.lifecycle import CallState, DeliveryState
from receiver.store import CallRecord, DeliveryRecord

CALL_COLUMNS = (
    "session_id, state, call_json, end_session, analysis_key, analysis_id, analysis_json, reason, attempts,"
    " polls, finished_via, received_at, started_at, finished_at, delivered_at, next_at, updated_at,"
    " analysis_profile, analysis_include"
)
DELIVERY_COLUMNS = (
    "id, session_id, handler, status, state, attempts, last_error, created_at, first_attempt_at, next_at,"
    " delivered_at, dead_at, replays"
)


class Row(Protocol):
    def __getitem__(self, key: str) -> Any: ...


def call_record(row: Row) -> CallRecord:
    return CallRecord(
        session_id=row["session_id"],
        state=CallState(row["state"]),
        fields=json.loads(row["call_json"]),
        end_session=bool(row["end_session"]),
        analysis_key=row["analysis_key"],
        analysis_id=row["analysis_id"],
        analysis=json.loads(row["analysis_json"]) if row["analysis_json"] else None,
        reason=row["reason"],
        attempts=row["attempts"],
        polls=row["polls"],
        finished_via=row["finished_via"],
        received_at=row["received_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        delivered_at=row["delivered_at"],
        next_at=row["next_at"],
        updated_at=row["updated_at"],
        analysis_profile=row["analysis_profile"],
        analysis_include=_include(row["analysis_include"]),
    )


def _include(value: str | None) -> tuple[str, ...] | None:
    return tuple(json.loads(value)) if value else None


@functools.lru_cache(maxsize=64)
def include_json(include: tuple[str, ...] | None) -> str | None:
    """The stored form of an include list (JSON text on every backend), order kept. Cached: every
    call accepted under the same settings has the same list."""
    return json.dumps(list(include)) if include is not None else None


def delivery_record(row: Row) -> DeliveryRecord:
    return DeliveryRecord(
        id=row["id"],
        session_id=row["session_id"],
        handler=row["handler"],
        status=row["status"],
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        first_attempt_at=row["first_attempt_at"],
        next_at=row["next_at"],
        delivered_at=row["delivered_at"],
        dead_at=row["dead_at"],
        replays=row["replays"],
    )
