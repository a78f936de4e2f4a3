"""The operator methods of the PostgreSQL store (listing, replay, pauses); a mixin
of ``PostgresStore``. Same SQL as SQLite (``receiver.store.operations``), numbered ``$n``."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from receiver.store import CallRecord, DeliveryRecord
from receiver.store import operations as ops
from receiver.store.keys import delivery_id
from receiver.store.operations import Attempt, ReplayOutcome, ReplayRecord, ReplayRequest
from receiver.store.query import POSTGRES, CallQuery, list_sql
from receiver.store.rows import CALL_COLUMNS, DELIVERY_COLUMNS, call_record, delivery_record

if TYPE_CHECKING:
    from receiver.store.postgres import Connection

Page = list[tuple[CallRecord, list[DeliveryRecord]]]
_n = POSTGRES.numbered


class PostgresOperations:
    """Needs ``_conn`` and ``_notify`` from ``PostgresStore``."""

    CHANNEL = "kallglot_receiver"

    def _conn(self, timeout: float | None = None) -> contextlib.AbstractAsyncContextManager[Connection]:
        raise NotImplementedError

    def _notify(self, kind: str) -> str:
        raise NotImplementedError

    async def list_calls(self, query: CallQuery) -> tuple[Page, bool]:
        sql, params = list_sql(query, POSTGRES, CALL_COLUMNS)
        async with self._conn() as conn, conn.transaction():
            if query.reason is not None:
                # A custom plan takes LIKE '%…%' for nearly empty and sorts every call that has a
                # reason (hundreds of ms at 1M calls); the generic plan walks the partial index
                # newest first and stops at the page.
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            rows = await conn.fetch(sql, *params)
            more = len(rows) > query.limit
            calls = [call_record(row) for row in rows[: query.limit]]
            deliveries: dict[str, list[DeliveryRecord]] = {c.session_id: [] for c in calls}
            if calls:
                for row in await conn.fetch(
                    f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE session_id = ANY($1::text[])"
                    " ORDER BY handler",
                    list(deliveries),
                ):
                    deliveries[row["session_id"]].append(delivery_record(row))
        return [(c, deliveries[c.session_id]) for c in calls], more

    async def replay(self, request: ReplayRequest, now: float) -> ReplayOutcome:
        replay_id = f"rpl_{uuid.uuid4().hex[:20]}"
        async with self._transaction() as conn:
            existing, params = ops.existing_sql(request, POSTGRES)
            found = await conn.fetchval(_n(f"SELECT count(*) FROM ({existing}) e"), *params)
            missing_query = ops.missing_sql(request, POSTGRES)
            missing = await conn.fetch(_n(missing_query[0]), *missing_query[1]) if missing_query else []
            matched = int(found) + len(missing)
            replayed = 0
            if not request.dry_run:
                status = await conn.execute(_n(ops.requeue_sql(existing)), now, replay_id, *params)
                replayed = int(status.split()[-1])
                for row in missing:
                    status = await conn.execute(
                        _n(ops.INSERT_DELIVERY),
                        delivery_id(row[0], row[1]),
                        row[0],
                        row[1],
                        row[2],
                        now,
                        now,
                        replay_id,
                    )
                    replayed += int(status.split()[-1])
                await conn.execute(_n(ops.REOPEN_CALLS), now, replay_id)
                if replayed:
                    await conn.execute("SELECT pg_notify($1, $2)", self.CHANNEL, self._notify("deliver"))
            await conn.execute(
                _n(ops.RECORD_REPLAY),
                replay_id,
                request.who,
                now,
                int(request.dry_run),
                json.dumps(request.description),
                matched,
                replayed,
            )
        return ReplayOutcome(replay_id, matched, replayed)

    async def list_replays(self, limit: int) -> list[ReplayRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(_n(ops.LIST_REPLAYS), limit)
        return [ReplayRecord(r[0], r[1], r[2], bool(r[3]), json.loads(r[4]), r[5], r[6]) for r in rows]

    async def pause_handler(self, handler: str, who: str, now: float) -> None:
        async with self._conn() as conn:
            await conn.execute(_n(ops.PAUSE), handler, who, now)

    async def resume_handler(self, handler: str) -> bool:
        async with self._conn() as conn:
            status = await conn.execute(_n(ops.RESUME), handler)
        resumed = status.split()[-1] != "0"
        if resumed:
            async with self._conn() as conn:
                await conn.execute("SELECT pg_notify($1, $2)", self.CHANNEL, self._notify("deliver"))
        return resumed

    async def record_attempt(self, attempt: Attempt) -> None:
        sql = (
            f"{ops.RECORD_ATTEMPT.split(' VALUES')[0]} SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?"
            " WHERE EXISTS (SELECT 1 FROM calls WHERE session_id = ?)"
        )
        async with self._conn() as conn:
            await conn.execute(_n(sql), *ops.attempt_params(attempt), attempt.session_id)

    async def list_attempts(self, session_id: str) -> list[Attempt]:
        async with self._conn() as conn:
            rows = await conn.fetch(_n(ops.LIST_ATTEMPTS), session_id)
        return [Attempt(*row) for row in rows]

    async def pending_by_handler(self) -> dict[str, tuple[int, float]]:
        async with self._conn() as conn:
            rows = await conn.fetch(ops.PENDING_BY_HANDLER)
        return {r[0]: (int(r[1]), float(r[2])) for r in rows}

    async def replicas_alive(self, replica_id: str, now: float, ttl: float) -> int:
        async with self._transaction() as conn:
            await conn.execute(_n(ops.REPLICA_SEEN), replica_id, now)
            await conn.execute(_n(ops.REPLICAS_FORGET), now - ttl)
            return int(await conn.fetchval(ops.REPLICAS_ALIVE))

    async def replica_gone(self, replica_id: str) -> None:
        async with self._conn() as conn:
            await conn.execute(_n(ops.REPLICA_GONE), replica_id)

    async def paused_handlers(self) -> dict[str, tuple[str, float]]:
        async with self._conn() as conn:
            rows = await conn.fetch(ops.PAUSED)
        return {r[0]: (r[1], r[2]) for r in rows}

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        async with self._conn() as conn, conn.transaction():
            yield conn
