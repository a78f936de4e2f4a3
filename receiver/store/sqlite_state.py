"""SQLite side of issue 8's store operations: start-lease renewal, the memory of analysed sessions,
and orphaned deliveries (detection at start-up; discard and move for operators)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from receiver.lifecycle import ANALYSED, DONE, OPERABLE, TO_START, CallState, DeliveryState, sql_in, sql_value
from receiver.store import RememberedSession
from receiver.store.keys import delivery_id

T = TypeVar("T")

_TO_START = sql_in(*TO_START)
_OPERABLE = sql_in(*OPERABLE)


def remember(conn: sqlite3.Connection, session_id: str, now: float) -> None:
    """Record the session as analysed once Kallglot accepted it (its analysis id is known)."""
    conn.execute(
        "INSERT INTO analysed_sessions (session_id, analysis_key, analysis_id, analysed_at)"
        " SELECT session_id, analysis_key, analysis_id, ? FROM calls WHERE session_id = ?"
        " AND analysis_id IS NOT NULL ON CONFLICT DO NOTHING",
        (now, session_id),
    )


def touch(conn: sqlite3.Connection, sessions: set[str], now: float) -> None:
    """Retention reads the call's updated_at: any change to one of its deliveries renews it."""
    conn.executemany("UPDATE calls SET updated_at = ? WHERE session_id = ?", [(now, s) for s in sessions])


def _maybe_delivered(conn: sqlite3.Connection, sessions: set[str], now: float) -> None:
    conn.executemany(
        f"UPDATE calls SET state = {sql_value(CallState.DELIVERED)}, delivered_at = ?, updated_at = ? WHERE session_id = ?"
        f" AND state IN {sql_in(*ANALYSED)} AND NOT EXISTS (SELECT 1 FROM deliveries"
        f" WHERE session_id = ? AND state NOT IN {sql_in(*DONE)})",
        [(now, now, s, s) for s in sessions],
    )


def _operable(conn: sqlite3.Connection, ids: Sequence[str]) -> list[sqlite3.Row]:
    marks = ",".join("?" * len(ids))
    return conn.execute(
        f"SELECT id, session_id, handler, status, created_at, replays FROM deliveries WHERE id IN ({marks}) AND state IN {_OPERABLE}",
        list(ids),
    ).fetchall()


class SQLiteStateMixin:
    """Mixed into ``SQLiteStore``: every method is one operation on the database thread."""

    if TYPE_CHECKING:

        async def _run(self, op: Callable[[sqlite3.Connection], T]) -> T: ...

    async def renew_call_lease(self, session_id: str, owner: str, until: float, now: float) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            changed = conn.execute(
                f"UPDATE calls SET lease_until = ? WHERE session_id = ? AND lease_owner = ?"
                f" AND state IN {_TO_START}",
                (until, session_id, owner),
            ).rowcount
            return bool(changed)

        return await self._run(op)

    async def remembered_session(self, session_id: str) -> RememberedSession | None:
        def op(conn: sqlite3.Connection) -> RememberedSession | None:
            row = conn.execute(
                "SELECT session_id, analysis_key, analysis_id, analysed_at FROM analysed_sessions"
                " WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            return RememberedSession(*row) if row else None

        return await self._run(op)

    async def forget_sessions(self, before: float, batch: int) -> int:
        def op(conn: sqlite3.Connection) -> int:
            count = conn.execute(
                "DELETE FROM analysed_sessions WHERE session_id IN (SELECT session_id FROM analysed_sessions a"
                " WHERE analysed_at < ? AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.session_id = a.session_id)"
                " LIMIT ?)",
                (before, batch),
            ).rowcount
            return int(count)

        return await self._run(op)

    async def orphan_deliveries(self, configured: Sequence[str], now: float) -> dict[str, int]:
        names = list(configured)
        marks = ",".join("?" * len(names)) or "NULL"

        def op(conn: sqlite3.Connection) -> dict[str, int]:
            gone = conn.execute(
                f"UPDATE deliveries SET state = {sql_value(DeliveryState.ORPHANED)}, lease_owner = NULL, lease_until = NULL"
                f" WHERE state = {sql_value(DeliveryState.PENDING)} AND handler NOT IN ({marks}) RETURNING session_id",
                names,
            ).fetchall()
            back = conn.execute(
                f"UPDATE deliveries SET state = {sql_value(DeliveryState.PENDING)}, next_at = ? WHERE state = {sql_value(DeliveryState.ORPHANED)}"
                f" AND handler IN ({marks}) RETURNING session_id",
                (now, *names),
            ).fetchall()
            touch(conn, {row[0] for row in (*gone, *back)}, now)
            rows = conn.execute(
                f"SELECT handler, count(*) FROM deliveries WHERE state = {sql_value(DeliveryState.ORPHANED)} GROUP BY handler"
            ).fetchall()
            return {row[0]: row[1] for row in rows}

        return await self._run(op)

    async def discard_deliveries(self, ids: Sequence[str], now: float | None = None) -> int:
        when = time.time() if now is None else now

        def op(conn: sqlite3.Connection) -> int:
            rows = _operable(conn, ids) if ids else []
            conn.executemany("DELETE FROM deliveries WHERE id = ?", [(row["id"],) for row in rows])
            sessions = {row["session_id"] for row in rows}
            touch(conn, sessions, when)
            _maybe_delivered(conn, sessions, when)
            return len(rows)

        return await self._run(op)

    async def move_deliveries(self, ids: Sequence[str], to_handler: str, now: float | None = None) -> int:
        when = time.time() if now is None else now

        def op(conn: sqlite3.Connection) -> int:
            rows = _operable(conn, ids) if ids else []
            moved = 0
            for row in rows:
                if row["handler"] == to_handler:
                    changed = conn.execute(
                        f"UPDATE deliveries SET state = {sql_value(DeliveryState.PENDING)}, attempts = 0, next_at = ?, dead_at = NULL,"
                        " first_attempt_at = NULL, replays = replays + 1, lease_owner = NULL, lease_until = NULL"
                        " WHERE id = ?",
                        (when, row["id"]),
                    ).rowcount
                else:
                    conn.execute("DELETE FROM deliveries WHERE id = ?", (row["id"],))
                    changed = conn.execute(
                        "INSERT INTO deliveries (id, session_id, handler, status, state, created_at, next_at,"
                        f" replays) VALUES (?, ?, ?, ?, {sql_value(DeliveryState.PENDING)}, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (
                            delivery_id(row["session_id"], to_handler),
                            row["session_id"],
                            to_handler,
                            row["status"],
                            row["created_at"],
                            when,
                            row["replays"] + 1,
                        ),
                    ).rowcount
                moved += changed
            sessions = {row["session_id"] for row in rows}
            touch(conn, sessions, when)
            _maybe_delivered(conn, sessions, when)
            return moved

        return await self._run(op)
