"""PostgreSQL side of ``CarrierStore``: the same semantics as SQLite, in one transaction each.

The session's call row is locked before the other legs are looked at, so two legs of one session
ending at the same moment on two replicas apply one after the other (one call, one analysis).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from receiver.lifecycle import CallState, sql_value
from receiver.store.carrier_port import (
    Applied,
    CarrierEvent,
    CarrierEventRecord,
    CarrierOutcome,
    CarrierPlan,
    LegKind,
)
from receiver.store.carriers_sqlite import _event, _record
from receiver.store.rows import include_json

if TYPE_CHECKING:
    from receiver.store.postgres import Connection

_COLUMNS = (
    "source, event_id, carrier_call_id, session_id, kind, status, call_json::text AS call_json, reason,"
    " received_at, matched_at"
)
INSERT_EVENT = """
INSERT INTO carrier_events (source, event_id, carrier_call_id, session_id, kind, status, call_json, reason,
                            received_at, matched_at)
VALUES ($1, $2, $3, $4::text, $5, $6, $7::jsonb, $8, $9::double precision,
        CASE WHEN $4::text IS NULL THEN NULL ELSE $9::double precision END)
ON CONFLICT DO NOTHING RETURNING 1
"""
MAPPED = "SELECT session_id FROM carrier_calls WHERE carrier_call_id = $1"
RECORD_MAPPING = """
INSERT INTO carrier_calls (carrier_call_id, session_id, recorded_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING
"""
MATCH = f"""
UPDATE carrier_events SET session_id = $1, matched_at = $2 WHERE session_id IS NULL AND carrier_call_id = $3
RETURNING {_COLUMNS}
"""
OTHER_LEG_LIVE = f"""
SELECT 1 FROM carrier_events o WHERE o.session_id = $1 AND o.carrier_call_id != $2 AND o.kind = {sql_value(LegKind.LIVE)}
AND NOT EXISTS (SELECT 1 FROM carrier_events e WHERE e.session_id = o.session_id
                AND e.carrier_call_id = o.carrier_call_id AND e.kind != {sql_value(LegKind.LIVE)}) LIMIT 1
"""
LOCK_CALL = "SELECT state FROM calls WHERE session_id = $1 FOR UPDATE"
INSERT_SKIPPED = f"""
INSERT INTO calls (session_id, state, call_json, end_session, analysis_key, reason, received_at, finished_at,
                   next_at, updated_at)
VALUES ($1, {sql_value(CallState.SKIPPED)}, $2::jsonb, false, $3, $4, $5, $5, $5, $5) ON CONFLICT DO NOTHING RETURNING 1
"""
# A session analysed before (its call row may be pruned since) is never created again.
INSERT_RECEIVED = f"""
INSERT INTO calls (session_id, state, call_json, end_session, analysis_key, received_at, next_at, updated_at,
                   analysis_profile, analysis_include)
SELECT $1, {sql_value(CallState.RECEIVED)}, $2::jsonb, $3, $4, $5, $6, $5, $7, $8
WHERE NOT EXISTS (SELECT 1 FROM analysed_sessions WHERE session_id = $1)
ON CONFLICT DO NOTHING RETURNING 1
"""
CALL_EXISTS = "SELECT 1 FROM calls WHERE session_id = $1"
# A carrier skip is provisional (see carriers_sqlite._REVIVE).
REVIVE = f"""
UPDATE calls SET state = {sql_value(CallState.RECEIVED)}, reason = NULL, finished_at = NULL, call_json = $2::jsonb, end_session = $3,
    next_at = $4, updated_at = $5
WHERE session_id = $1 AND state = {sql_value(CallState.SKIPPED)} AND analysis_id IS NULL
  AND EXISTS (SELECT 1 FROM carrier_events WHERE session_id = $1 AND kind = {sql_value(LegKind.SKIPPED)})
RETURNING 1
"""
MERGE_CALL = f"""
UPDATE calls SET call_json = receiver_merge_patch(call_json, $2::jsonb), end_session = end_session OR $3,
    next_at = CASE WHEN state = {sql_value(CallState.RECEIVED)} AND lease_owner IS NULL THEN $4 ELSE next_at END, updated_at = $5
WHERE session_id = $1
"""

PRUNE_EVENTS = """
WITH gone AS (
    DELETE FROM carrier_events WHERE (source, event_id) IN (
        SELECT source, event_id FROM carrier_events WHERE session_id IS NOT NULL AND received_at < $1 LIMIT $2)
    RETURNING 1
) SELECT count(*) FROM gone
"""
PRUNE_MAPPINGS = """
WITH gone AS (
    DELETE FROM carrier_calls WHERE carrier_call_id IN (
        SELECT carrier_call_id FROM carrier_calls WHERE recorded_at < $1 LIMIT $2)
    RETURNING 1
) SELECT count(*) FROM gone
"""


class PostgresCarriers:
    """Mixed into ``PostgresStore`` (which provides ``_conn`` and ``_notify``)."""

    @contextlib.asynccontextmanager
    async def _conn(self, timeout: float | None = None) -> AsyncIterator[Connection]:
        raise NotImplementedError
        yield  # pragma: no cover

    def _notify(self, kind: str) -> str:
        raise NotImplementedError

    async def accept_carrier_event(self, event: CarrierEvent, plan: CarrierPlan, now: float) -> Applied:
        async with self._conn() as conn, conn.transaction():
            session_id = event.session_id or await conn.fetchval(MAPPED, event.carrier_call_id)
            inserted = await conn.fetchval(
                INSERT_EVENT,
                event.source,
                event.event_id,
                event.carrier_call_id,
                session_id,
                event.kind.value,
                event.status,
                json.dumps(event.call),
                event.reason,
                now,
            )
            if not inserted:
                return Applied(CarrierOutcome.DUPLICATE, session_id)
            if session_id is None:
                return Applied(CarrierOutcome.UNMATCHED, None)
            if event.session_id is not None:
                await conn.execute(RECORD_MAPPING, event.carrier_call_id, event.session_id, now)
            return Applied(await self._apply(conn, event, session_id, plan, now), session_id)

    async def map_carrier_call(
        self, carrier_call_id: str, session_id: str, plan: CarrierPlan, now: float
    ) -> list[Applied]:
        async with self._conn() as conn, conn.transaction():
            await conn.execute(RECORD_MAPPING, carrier_call_id, session_id, now)
            target = await conn.fetchval(MAPPED, carrier_call_id) or session_id
            rows = await conn.fetch(MATCH, target, now, carrier_call_id)
            events = sorted((_record(row) for row in rows), key=lambda r: (r.received_at, r.event_id))
            return [Applied(await self._apply(conn, _event(r), target, plan, now), target) for r in events]

    async def list_carrier_events(self, session_id: str | None, limit: int) -> list[CarrierEventRecord]:
        async with self._conn() as conn:
            if session_id is None:
                rows = await conn.fetch(
                    f"SELECT {_COLUMNS} FROM carrier_events WHERE session_id IS NULL ORDER BY received_at"
                    " LIMIT $1",
                    limit,
                )
            else:
                rows = await conn.fetch(
                    f"SELECT {_COLUMNS} FROM carrier_events WHERE session_id = $1 ORDER BY received_at LIMIT $2",
                    session_id,
                    limit,
                )
        return [_record(row) for row in rows]

    async def count_unmatched_carrier_events(self) -> int:
        async with self._conn() as conn:
            count: Any = await conn.fetchval("SELECT count(*) FROM carrier_events WHERE session_id IS NULL")
        return int(count)

    async def prune_carrier_events(self, before: float, batch: int) -> int:
        async with self._conn() as conn:
            events = await conn.fetchval(PRUNE_EVENTS, before, batch)
            mappings = await conn.fetchval(PRUNE_MAPPINGS, before, batch)
        return int(events or 0) + int(mappings or 0)

    async def _apply(
        self, conn: Connection, event: CarrierEvent, session_id: str, plan: CarrierPlan, now: float
    ) -> CarrierOutcome:
        if event.kind is LegKind.LIVE:
            return CarrierOutcome.IGNORED
        await conn.execute(LOCK_CALL, session_id)
        other_live = await conn.fetchval(OTHER_LEG_LIVE, session_id, event.carrier_call_id) is not None
        fields = json.dumps(event.call)
        key = plan.analysis_key(session_id)
        if event.kind is LegKind.SKIPPED:
            if other_live:
                return CarrierOutcome.IGNORED
            inserted = await conn.fetchval(INSERT_SKIPPED, session_id, fields, key, event.reason, now)
            return CarrierOutcome.SKIPPED if inserted else CarrierOutcome.IGNORED
        due = now + (plan.hold_seconds if other_live else plan.settle_seconds)
        end_session = plan.end_session.get(event.source, False)
        include = include_json(plan.include)
        if await conn.fetchval(
            INSERT_RECEIVED, session_id, fields, end_session, key, now, due, plan.profile, include
        ) or (await conn.fetchval(REVIVE, session_id, fields, end_session, due, now)):
            await conn.execute("SELECT pg_notify('kallglot_receiver', $1)", self._notify("start"))
            return CarrierOutcome.ACCEPTED
        if not await conn.fetchval(CALL_EXISTS, session_id):
            return CarrierOutcome.IGNORED  # remembered as analysed
        await conn.execute(MERGE_CALL, session_id, fields, end_session, due, now)
        return CarrierOutcome.MERGED
