"""PostgreSQL side of the outbox: claiming and settling deliveries, and the operator's reads (a call,
dead letters, replay of dead letters, stats, retention)."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

from receiver import lifecycle
from receiver.lifecycle import DeliveryState
from receiver.store import CallRecord, DeliveryJob, DeliveryRecord, Stats
from receiver.store import postgres_sql as sql
from receiver.store import postgres_state_sql as state_sql
from receiver.store.postgres_listen import CHANNEL
from receiver.store.rows import CALL_COLUMNS, DELIVERY_COLUMNS, call_record, delivery_record


def _loads(value: str | None) -> Any:
    return json.loads(value) if value is not None else None


def _dead_filter(
    handler: str | None, session_id: str | None, since: float | None, first: int
) -> tuple[str, list[Any]]:
    clauses, params = [f"state = {lifecycle.sql_value(DeliveryState.DEAD)}"], []
    for clause, value in (("handler = ", handler), ("session_id = ", session_id), ("dead_at >= ", since)):
        if value is not None:
            params.append(value)
            clauses.append(f"{clause}${first + len(params) - 1}")
    return " AND ".join(clauses), params


class PostgresOutboxMixin:
    """Mixed into ``PostgresStore`` (which provides ``_conn`` and ``_notify``)."""

    if TYPE_CHECKING:

        def _conn(self, timeout: float | None = None) -> contextlib.AbstractAsyncContextManager[Any]: ...

        def _notify(self, kind: str) -> str: ...

    async def claim_deliveries(
        self, handler: str, limit: int, now: float, lease_seconds: float, owner: str
    ) -> list[DeliveryJob]:
        async with self._conn() as conn:
            rows = await conn.fetch(sql.CLAIM_DELIVERIES, owner, now + lease_seconds, now, handler, limit)
        jobs = [
            DeliveryJob(
                delivery=delivery_record(row),
                call=json.loads(row["call_json"]),
                analysis=_loads(row["analysis_json"]) or {},
                analysis_id=row["call_analysis_id"],
                call_received_at=row["call_received_at"],
            )
            for row in rows
        ]
        return sorted(jobs, key=lambda job: job.delivery.next_at)

    async def mark_delivered(self, delivery_id: str, now: float) -> None:
        async with self._conn() as conn, conn.transaction():
            await conn.execute(sql.LOCK_CALL_OF_DELIVERY, delivery_id)
            await conn.execute(sql.MARK_DELIVERED, delivery_id, now)

    async def mark_filtered(self, delivery_id: str, now: float) -> None:
        async with self._conn() as conn, conn.transaction():
            await conn.execute(sql.LOCK_CALL_OF_DELIVERY, delivery_id)
            await conn.execute(sql.MARK_FILTERED, delivery_id, now)

    async def retry_delivery(self, delivery_id: str, next_at: float, error: str, now: float) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = $2, next_at = $3,"
                f" lease_owner = NULL, lease_until = NULL WHERE id = $1 AND state = {lifecycle.sql_value(DeliveryState.PENDING)}",
                delivery_id,
                error,
                next_at,
            )

    async def dead_letter(self, delivery_id: str, error: str, now: float) -> None:
        async with self._conn() as conn:
            await conn.execute(state_sql.DEAD_LETTER, delivery_id, error, now)

    async def release_delivery(self, delivery_id: str, next_at: float) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE deliveries SET next_at = $2, lease_owner = NULL, lease_until = NULL"
                f" WHERE id = $1 AND state = {lifecycle.sql_value(DeliveryState.PENDING)}",
                delivery_id,
                next_at,
            )

    # --- admin --------------------------------------------------------------------------------

    async def get_call(self, session_id: str) -> tuple[CallRecord, list[DeliveryRecord]] | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT {CALL_COLUMNS} FROM calls WHERE session_id = $1", session_id)
            if row is None:
                return None
            deliveries = await conn.fetch(
                f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE session_id = $1 ORDER BY handler",
                session_id,
            )
        return call_record(row), [delivery_record(d) for d in deliveries]

    async def list_dead_letters(
        self, handler: str | None, session_id: str | None, since: float | None, limit: int
    ) -> list[DeliveryRecord]:
        where, params = _dead_filter(handler, session_id, since, 2)
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {where} ORDER BY dead_at LIMIT $1",
                limit,
                *params,
            )
        return [delivery_record(row) for row in rows]

    async def replay_dead_letters(
        self, handler: str | None, session_id: str | None, since: float | None, now: float
    ) -> int:
        where, params = _dead_filter(handler, session_id, since, 3)
        async with self._conn() as conn:
            count = await conn.fetchval(
                f"WITH r AS (UPDATE deliveries SET state = {lifecycle.sql_value(DeliveryState.PENDING)}, attempts = 0, next_at = $1,"
                f" dead_at = NULL, first_attempt_at = NULL, replays = replays + 1 WHERE {where}"
                " RETURNING session_id), t AS (UPDATE calls SET updated_at = $1"
                " WHERE session_id IN (SELECT session_id FROM r))"
                f" SELECT count(*), CASE WHEN EXISTS (SELECT 1 FROM r) THEN pg_notify('{CHANNEL}', $2) END"
                " FROM r",
                now,
                self._notify("deliver"),
                *params,
            )
        return int(count or 0)

    async def stats(self, now: float) -> Stats:
        async with self._conn() as conn:
            row = await conn.fetchrow(sql.STATS)
        assert row is not None
        backlog: dict[str, int] = {}
        oldest: dict[str, float] = {}
        for stage in ("start", "analysis", "delivery"):
            count, first = json.loads(row[stage])
            backlog[stage] = int(count)
            oldest[stage] = max(0.0, now - float(first)) if first is not None else 0.0
        dead = {str(k): int(v) for k, v in json.loads(row["dead"]).items()}
        by_state = {str(k): int(v) for k, v in json.loads(row["by_state"]).items()}
        orphaned = {str(k): int(v) for k, v in json.loads(row["orphaned"]).items()}
        return Stats(
            backlog=backlog, oldest=oldest, dead_letters=dead, calls_by_state=by_state, orphaned=orphaned
        )

    async def prune(self, events_before: float, calls_before: float, batch: int) -> tuple[int, int]:
        async with self._conn() as conn:
            row = await conn.fetchrow(sql.PRUNE, events_before, calls_before, batch)
        assert row is not None
        return int(row["events"]), int(row["calls"])
