"""SQLite side of ``CarrierStore``: carrier events kept, matched and applied in one transaction."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from receiver.lifecycle import CallState, sql_value
from receiver.store.carrier_port import (
    Applied,
    CarrierEvent,
    CarrierEventRecord,
    CarrierOutcome,
    CarrierPlan,
    LegKind,
)
from receiver.store.rows import include_json

T = TypeVar("T")

_COLUMNS = (
    "source, event_id, carrier_call_id, session_id, kind, status, call_json, reason, received_at, matched_at"
)
# Another leg of the session was seen live and has not ended (or been skipped) yet.
_OTHER_LEG_LIVE = (
    f"SELECT 1 FROM carrier_events o WHERE o.session_id = ? AND o.carrier_call_id != ? AND o.kind = {sql_value(LegKind.LIVE)}"
    " AND NOT EXISTS (SELECT 1 FROM carrier_events e WHERE e.session_id = o.session_id"
    f" AND e.carrier_call_id = o.carrier_call_id AND e.kind != {sql_value(LegKind.LIVE)}) LIMIT 1"
)


# A carrier skip is provisional: when another leg of the session ends after connecting (a busy
# transfer target, then the caller's leg), the call the skip recorded is started after all.
_REVIVE = (
    f"UPDATE calls SET state = {sql_value(CallState.RECEIVED)}, reason = NULL, finished_at = NULL, call_json = ?, end_session = ?,"
    f" next_at = ?, updated_at = ? WHERE session_id = ? AND state = {sql_value(CallState.SKIPPED)} AND analysis_id IS NULL"
    f" AND EXISTS (SELECT 1 FROM carrier_events WHERE session_id = ? AND kind = {sql_value(LegKind.SKIPPED)})"
)


class SQLiteCarriers:
    """Mixed into ``SQLiteStore`` (which provides ``_run``)."""

    async def _run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def accept_carrier_event(self, event: CarrierEvent, plan: CarrierPlan, now: float) -> Applied:
        def op(conn: sqlite3.Connection) -> Applied:
            session_id = event.session_id or _mapped(conn, event.carrier_call_id)
            inserted = conn.execute(
                f"INSERT INTO carrier_events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (
                    event.source,
                    event.event_id,
                    event.carrier_call_id,
                    session_id,
                    event.kind.value,
                    event.status,
                    json.dumps(event.call),
                    event.reason,
                    now,
                    now if session_id else None,
                ),
            ).rowcount
            if not inserted:
                return Applied(CarrierOutcome.DUPLICATE, session_id)
            if session_id is None:
                return Applied(CarrierOutcome.UNMATCHED, None)
            if event.session_id is not None:
                _record_mapping(conn, event.carrier_call_id, event.session_id, now)
            return Applied(_apply(conn, event, session_id, plan, now), session_id)

        return await self._run(op)

    async def map_carrier_call(
        self, carrier_call_id: str, session_id: str, plan: CarrierPlan, now: float
    ) -> list[Applied]:
        def op(conn: sqlite3.Connection) -> list[Applied]:
            _record_mapping(conn, carrier_call_id, session_id, now)
            target = _mapped(conn, carrier_call_id) or session_id
            rows = conn.execute(
                f"UPDATE carrier_events SET session_id = ?, matched_at = ? WHERE session_id IS NULL"
                f" AND carrier_call_id = ? RETURNING {_COLUMNS}",
                (target, now, carrier_call_id),
            ).fetchall()
            events = sorted((_record(row) for row in rows), key=lambda r: (r.received_at, r.event_id))
            return [Applied(_apply(conn, _event(r), target, plan, now), target) for r in events]

        return await self._run(op)

    async def list_carrier_events(self, session_id: str | None, limit: int) -> list[CarrierEventRecord]:
        where = "session_id = ?" if session_id is not None else "session_id IS NULL"
        params: tuple[Any, ...] = (session_id, limit) if session_id is not None else (limit,)
        return await self._run(
            lambda conn: [
                _record(row)
                for row in conn.execute(
                    f"SELECT {_COLUMNS} FROM carrier_events WHERE {where} ORDER BY received_at LIMIT ?",
                    params,
                )
            ]
        )

    async def count_unmatched_carrier_events(self) -> int:
        return await self._run(
            lambda conn: int(
                conn.execute("SELECT count(*) FROM carrier_events WHERE session_id IS NULL").fetchone()[0]
            )
        )

    async def prune_carrier_events(self, before: float, batch: int) -> int:
        def op(conn: sqlite3.Connection) -> int:
            events = conn.execute(
                "DELETE FROM carrier_events WHERE (source, event_id) IN (SELECT source, event_id FROM"
                " carrier_events WHERE session_id IS NOT NULL AND received_at < ? LIMIT ?)",
                (before, batch),
            ).rowcount
            mappings = conn.execute(
                "DELETE FROM carrier_calls WHERE carrier_call_id IN (SELECT carrier_call_id FROM carrier_calls"
                " WHERE recorded_at < ? LIMIT ?)",
                (before, batch),
            ).rowcount
            return int(events) + int(mappings)

        return await self._run(op)


def _mapped(conn: sqlite3.Connection, carrier_call_id: str) -> str | None:
    row = conn.execute(
        "SELECT session_id FROM carrier_calls WHERE carrier_call_id = ?", (carrier_call_id,)
    ).fetchone()
    return row[0] if row else None


def _record_mapping(conn: sqlite3.Connection, carrier_call_id: str, session_id: str, now: float) -> None:
    conn.execute(
        "INSERT INTO carrier_calls (carrier_call_id, session_id, recorded_at) VALUES (?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (carrier_call_id, session_id, now),
    )


def _apply(
    conn: sqlite3.Connection, event: CarrierEvent, session_id: str, plan: CarrierPlan, now: float
) -> CarrierOutcome:
    if event.kind is LegKind.LIVE:
        return CarrierOutcome.IGNORED
    other_live = conn.execute(_OTHER_LEG_LIVE, (session_id, event.carrier_call_id)).fetchone() is not None
    fields = json.dumps(event.call)
    if event.kind is LegKind.SKIPPED:
        if other_live:
            return CarrierOutcome.IGNORED
        inserted = conn.execute(
            "INSERT INTO calls (session_id, state, call_json, end_session, analysis_key, reason, received_at,"
            f" finished_at, next_at, updated_at) VALUES (?, {sql_value(CallState.SKIPPED)}, ?, 0, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (session_id, fields, plan.analysis_key(session_id), event.reason, now, now, now, now),
        ).rowcount
        return CarrierOutcome.SKIPPED if inserted else CarrierOutcome.IGNORED
    due = now + (plan.hold_seconds if other_live else plan.settle_seconds)
    end_session = int(plan.end_session.get(event.source, False))
    # A session analysed before (its call row may be pruned since) is never created again.
    inserted = conn.execute(
        "INSERT INTO calls (session_id, state, call_json, end_session, analysis_key, received_at, next_at,"
        f" updated_at, analysis_profile, analysis_include) SELECT ?, {sql_value(CallState.RECEIVED)}, ?, ?, ?, ?, ?, ?, ?, ?"
        " WHERE NOT EXISTS (SELECT 1 FROM analysed_sessions WHERE session_id = ?) ON CONFLICT DO NOTHING",
        (
            session_id,
            fields,
            end_session,
            plan.analysis_key(session_id),
            now,
            due,
            now,
            plan.profile,
            include_json(plan.include),
            session_id,
        ),
    ).rowcount
    if inserted:
        return CarrierOutcome.ACCEPTED
    if conn.execute("SELECT 1 FROM calls WHERE session_id = ?", (session_id,)).fetchone() is None:
        return CarrierOutcome.IGNORED  # remembered as analysed
    revived = conn.execute(_REVIVE, (fields, end_session, due, now, session_id, session_id)).rowcount
    if revived:
        return CarrierOutcome.ACCEPTED
    conn.execute(
        "UPDATE calls SET call_json = json_patch(call_json, ?), end_session = max(end_session, ?),"
        f" next_at = CASE WHEN state = {sql_value(CallState.RECEIVED)} AND lease_owner IS NULL THEN ? ELSE next_at END,"
        " updated_at = ? WHERE session_id = ?",
        (fields, end_session, due, now, session_id),
    )
    return CarrierOutcome.MERGED


def _record(row: Any) -> CarrierEventRecord:
    return CarrierEventRecord(
        source=row["source"],
        event_id=row["event_id"],
        carrier_call_id=row["carrier_call_id"],
        session_id=row["session_id"],
        kind=LegKind(row["kind"]),
        status=row["status"],
        call=json.loads(row["call_json"]) if isinstance(row["call_json"], str) else dict(row["call_json"]),
        reason=row["reason"],
        received_at=row["received_at"],
        matched_at=row["matched_at"],
    )


def _event(record: CarrierEventRecord) -> CarrierEvent:
    return CarrierEvent(
        source=record.source,
        event_id=record.event_id,
        carrier_call_id=record.carrier_call_id,
        session_id=record.session_id,
        kind=record.kind,
        status=record.status,
        call=record.call,
        reason=record.reason,
    )
