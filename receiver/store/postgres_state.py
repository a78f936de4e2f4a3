"""PostgreSQL side of issue 8's store operations: start-lease renewal, the memory of analysed
sessions, and orphaned deliveries (detection at start-up; discard and move for operators)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from receiver.store import RememberedSession
from receiver.store import postgres_state_sql as sql
from receiver.store.keys import delivery_id


class PostgresStateMixin:
    """Mixed into ``PostgresStore`` (which provides ``_conn`` and ``_notify``)."""

    if TYPE_CHECKING:

        def _conn(self, timeout: float | None = None) -> contextlib.AbstractAsyncContextManager[Any]: ...

        def _notify(self, kind: str) -> str: ...

    async def renew_call_lease(self, session_id: str, owner: str, until: float, now: float) -> bool:
        async with self._conn() as conn:
            status = await conn.execute(sql.RENEW_START_LEASE, session_id, owner, until)
        return bool(status != "UPDATE 0")

    async def remembered_session(self, session_id: str) -> RememberedSession | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(sql.REMEMBERED, session_id)
        if row is None:
            return None
        return RememberedSession(
            row["session_id"], row["analysis_key"], row["analysis_id"], row["analysed_at"]
        )

    async def forget_sessions(self, before: float, batch: int) -> int:
        async with self._conn() as conn:
            count = await conn.fetchval(sql.FORGET, before, batch)
        return int(count or 0)

    async def orphan_deliveries(self, configured: Sequence[str], now: float) -> dict[str, int]:
        async with self._conn() as conn, conn.transaction():
            row = await conn.fetchrow(sql.ORPHAN, list(configured), now)
            if row is not None and row["back"]:
                await conn.execute("SELECT pg_notify('kallglot_receiver', $1)", self._notify("deliver"))
            rows = await conn.fetch(sql.ORPHANED_COUNTS)
        return {r["handler"]: int(r["n"]) for r in rows}

    @contextlib.asynccontextmanager
    async def _operable(self, ids: Sequence[str]) -> AsyncIterator[tuple[Any, list[Any]]]:
        async with self._conn() as conn, conn.transaction():
            rows = await conn.fetch(sql.LOCK_OPERABLE, list(ids)) if ids else []
            yield conn, rows

    async def discard_deliveries(self, ids: Sequence[str], now: float | None = None) -> int:
        when = time.time() if now is None else now
        async with self._operable(ids) as (conn, rows):
            await conn.execute(sql.DELETE_DELIVERIES, [row["id"] for row in rows])
            await conn.execute(sql.SETTLE, list({row["session_id"] for row in rows}), when)
        return len(rows)

    async def move_deliveries(self, ids: Sequence[str], to_handler: str, now: float | None = None) -> int:
        when = time.time() if now is None else now
        moved = 0
        async with self._operable(ids) as (conn, rows):
            for row in rows:
                if row["handler"] == to_handler:
                    await conn.execute(sql.REPEND, row["id"], when)
                    moved += 1
                    continue
                await conn.execute(sql.DELETE_DELIVERIES, [row["id"]])
                inserted = await conn.fetchval(
                    sql.INSERT_MOVED,
                    delivery_id(row["session_id"], to_handler),
                    row["session_id"],
                    to_handler,
                    row["status"],
                    row["created_at"],
                    when,
                    row["replays"] + 1,
                )
                moved += 1 if inserted else 0
            await conn.execute(sql.SETTLE, list({row["session_id"] for row in rows}), when)
            if moved:
                await conn.execute("SELECT pg_notify('kallglot_receiver', $1)", self._notify("deliver"))
        return moved
