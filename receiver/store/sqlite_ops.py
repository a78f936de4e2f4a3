"""The operator methods of the SQLite store (listing, replay, pauses); a mixin of
``SQLiteStore`` so that the worker-facing module stays the size of one concept."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from receiver.store import CallRecord, DeliveryRecord
from receiver.store import operations as ops
from receiver.store.keys import delivery_id
from receiver.store.operations import Attempt, ReplayOutcome, ReplayRecord, ReplayRequest
from receiver.store.query import SQLITE, CallQuery, list_sql
from receiver.store.rows import CALL_COLUMNS, DELIVERY_COLUMNS, call_record, delivery_record

T = TypeVar("T")
Page = list[tuple[CallRecord, list[DeliveryRecord]]]


class SQLiteOperations:
    """Needs ``_run`` (the database thread) from ``SQLiteStore``."""

    async def _run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def list_calls(self, query: CallQuery) -> tuple[Page, bool]:
        """One page of calls newest first with their deliveries, and whether more follow."""
        sql, params = list_sql(query, SQLITE, CALL_COLUMNS)

        def op(conn: sqlite3.Connection) -> tuple[Page, bool]:
            rows = conn.execute(sql, params).fetchall()
            more = len(rows) > query.limit
            calls = [call_record(row) for row in rows[: query.limit]]
            return _with_deliveries(conn, calls), more

        return await self._run(op)

    async def replay(self, request: ReplayRequest, now: float) -> ReplayOutcome:
        replay_id = f"rpl_{uuid.uuid4().hex[:20]}"

        def op(conn: sqlite3.Connection) -> ReplayOutcome:
            existing, params = ops.existing_sql(request, SQLITE)
            found = conn.execute(f"SELECT count(*) FROM ({existing})", params).fetchone()[0]
            missing_query = ops.missing_sql(request, SQLITE)
            missing = conn.execute(*missing_query).fetchall() if missing_query else []
            matched = int(found) + len(missing)
            replayed = 0
            if not request.dry_run:
                replayed = conn.execute(ops.requeue_sql(existing), (now, replay_id, *params)).rowcount
                replayed += conn.executemany(
                    ops.INSERT_DELIVERY,
                    [
                        (delivery_id(row[0], row[1]), row[0], row[1], row[2], now, now, replay_id)
                        for row in missing
                    ],
                ).rowcount
                conn.execute(ops.REOPEN_CALLS, (now, replay_id))
            conn.execute(
                ops.RECORD_REPLAY,
                (
                    replay_id,
                    request.who,
                    now,
                    int(request.dry_run),
                    json.dumps(request.description),
                    matched,
                    replayed,
                ),
            )
            return ReplayOutcome(replay_id, matched, int(replayed))

        return await self._run(op)

    async def list_replays(self, limit: int) -> list[ReplayRecord]:
        def op(conn: sqlite3.Connection) -> list[ReplayRecord]:
            return [
                ReplayRecord(r[0], r[1], r[2], bool(r[3]), json.loads(r[4]), r[5], r[6])
                for r in conn.execute(ops.LIST_REPLAYS, (limit,))
            ]

        return await self._run(op)

    async def pause_handler(self, handler: str, who: str, now: float) -> None:
        await self._run(lambda conn: conn.execute(ops.PAUSE, (handler, who, now)))

    async def resume_handler(self, handler: str) -> bool:
        return bool(await self._run(lambda conn: conn.execute(ops.RESUME, (handler,)).rowcount))

    async def record_attempt(self, attempt: Attempt) -> None:
        """Keep one attempt in the call's history (a call that no longer exists keeps none)."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"{ops.RECORD_ATTEMPT.split(' VALUES')[0]} SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?"
                " WHERE EXISTS (SELECT 1 FROM calls WHERE session_id = ?)",
                (*ops.attempt_params(attempt), attempt.session_id),
            )

        await self._run(op)

    async def list_attempts(self, session_id: str) -> list[Attempt]:
        return await self._run(
            lambda conn: [Attempt(*row) for row in conn.execute(ops.LIST_ATTEMPTS, (session_id,)).fetchall()]
        )

    async def pending_by_handler(self) -> dict[str, tuple[int, float]]:
        """Handler -> (pending deliveries, oldest created_at)."""
        return await self._run(
            lambda conn: {r[0]: (int(r[1]), float(r[2])) for r in conn.execute(ops.PENDING_BY_HANDLER)}
        )

    async def replicas_alive(self, replica_id: str, now: float, ttl: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            conn.execute(ops.REPLICA_SEEN, (replica_id, now))
            conn.execute(ops.REPLICAS_FORGET, (now - ttl,))
            return int(conn.execute(ops.REPLICAS_ALIVE).fetchone()[0])

        return await self._run(op)

    async def replica_gone(self, replica_id: str) -> None:
        await self._run(lambda conn: conn.execute(ops.REPLICA_GONE, (replica_id,)))

    async def paused_handlers(self) -> dict[str, tuple[str, float]]:
        """Paused handler -> (who, since): their work stays queued and no process delivers it."""
        return await self._run(lambda conn: {r[0]: (r[1], r[2]) for r in conn.execute(ops.PAUSED).fetchall()})


def _with_deliveries(conn: sqlite3.Connection, calls: list[CallRecord]) -> Page:
    if not calls:
        return []
    sessions = [c.session_id for c in calls]
    by_session: dict[str, list[DeliveryRecord]] = {s: [] for s in sessions}
    rows: Any = conn.execute(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE session_id IN ({','.join('?' * len(sessions))})"
        " ORDER BY handler",
        sessions,
    )
    for row in rows:
        by_session[row["session_id"]].append(delivery_record(row))
    return [(c, by_session[c.session_id]) for c in calls]
