"""SQLite side of the outbox: claiming and settling deliveries, and the operator's reads (a call,
dead letters, replay of dead letters, stats, retention). Every method is one database-thread operation."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from receiver.lifecycle import (
    ANALYSED,
    DONE,
    IN_FLIGHT,
    PRUNABLE,
    TO_START,
    UNDELIVERED,
    CallState,
    DeliveryState,
    sql_in,
    sql_value,
)
from receiver.store import CallRecord, DeliveryJob, DeliveryRecord, Stats
from receiver.store.rows import CALL_COLUMNS, DELIVERY_COLUMNS, call_record, delivery_record
from receiver.store.sqlite_state import touch as _touch

T = TypeVar("T")


class SQLiteOutboxMixin:
    """Mixed into ``SQLiteStore`` (which provides ``_run``)."""

    if TYPE_CHECKING:

        async def _run(self, op: Callable[[sqlite3.Connection], T]) -> T: ...

    async def claim_deliveries(
        self, handler: str, limit: int, now: float, lease_seconds: float, owner: str
    ) -> list[DeliveryJob]:
        def op(conn: sqlite3.Connection) -> list[DeliveryJob]:
            rows = conn.execute(
                f"UPDATE deliveries SET lease_owner = ?, lease_until = ?, first_attempt_at ="
                f" coalesce(first_attempt_at, ?) WHERE id IN (SELECT id FROM deliveries WHERE handler = ?"
                f" AND state = {sql_value(DeliveryState.PENDING)} AND next_at <= ? AND (lease_until IS NULL OR lease_until < ?)"
                f" ORDER BY next_at LIMIT ?) RETURNING {DELIVERY_COLUMNS}",
                (owner, now + lease_seconds, now, handler, now, now, limit),
            ).fetchall()
            if not rows:
                return []
            deliveries = [delivery_record(row) for row in rows]
            sessions = [d.session_id for d in deliveries]
            calls = {
                row["session_id"]: row
                for row in conn.execute(
                    "SELECT session_id, call_json, analysis_json, analysis_id, received_at FROM calls"
                    f" WHERE session_id IN ({_placeholders(sessions)})",
                    sessions,
                )
            }
            jobs = []
            for d in sorted(deliveries, key=lambda d: d.next_at):
                row = calls[d.session_id]
                jobs.append(
                    DeliveryJob(
                        delivery=d,
                        call=json.loads(row["call_json"]),
                        analysis=json.loads(row["analysis_json"] or "{}"),
                        analysis_id=row["analysis_id"],
                        call_received_at=row["received_at"],
                    )
                )
            return jobs

        return await self._run(op)

    async def mark_delivered(self, delivery_id: str, now: float) -> None:
        def op(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                f"UPDATE deliveries SET state = {sql_value(DeliveryState.DELIVERED)}, delivered_at = ?, attempts = attempts + 1,"
                f" last_error = NULL, lease_owner = NULL, lease_until = NULL WHERE id = ? AND state = {sql_value(DeliveryState.PENDING)}"
                " RETURNING session_id",
                (now, delivery_id),
            ).fetchone()
            if row is not None:
                _maybe_delivered(conn, row["session_id"], now)

        await self._run(op)

    async def mark_filtered(self, delivery_id: str, now: float) -> None:
        def op(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                f"UPDATE deliveries SET state = {sql_value(DeliveryState.FILTERED)}, lease_owner = NULL,"
                f" lease_until = NULL WHERE id = ? AND state = {sql_value(DeliveryState.PENDING)} RETURNING session_id",
                (delivery_id,),
            ).fetchone()
            if row is not None:
                _maybe_delivered(conn, row["session_id"], now)

        await self._run(op)

    async def retry_delivery(self, delivery_id: str, next_at: float, error: str, now: float) -> None:
        await self._run(
            lambda conn: conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, next_at = ?, lease_owner = NULL,"
                f" lease_until = NULL WHERE id = ? AND state = {sql_value(DeliveryState.PENDING)}",
                (error, next_at, delivery_id),
            )
        )

    async def dead_letter(self, delivery_id: str, error: str, now: float) -> None:
        def op(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                f"UPDATE deliveries SET state = {sql_value(DeliveryState.DEAD)}, attempts = attempts + 1, last_error = ?, dead_at = ?,"
                f" lease_owner = NULL, lease_until = NULL WHERE id = ? AND state = {sql_value(DeliveryState.PENDING)} RETURNING session_id",
                (error, now, delivery_id),
            ).fetchone()
            if row is not None:  # retention reads the call's updated_at
                conn.execute("UPDATE calls SET updated_at = ? WHERE session_id = ?", (now, row[0]))

        await self._run(op)

    async def release_delivery(self, delivery_id: str, next_at: float) -> None:
        await self._run(
            lambda conn: conn.execute(
                "UPDATE deliveries SET next_at = ?, lease_owner = NULL, lease_until = NULL"
                f" WHERE id = ? AND state = {sql_value(DeliveryState.PENDING)}",
                (next_at, delivery_id),
            )
        )

    # --- admin ------------------------------------------------------------------------------

    async def get_call(self, session_id: str) -> tuple[CallRecord, list[DeliveryRecord]] | None:
        def op(conn: sqlite3.Connection) -> tuple[CallRecord, list[DeliveryRecord]] | None:
            row = conn.execute(
                f"SELECT {CALL_COLUMNS} FROM calls WHERE session_id = ?", (session_id,)
            ).fetchone()
            if row is None:
                return None
            deliveries = conn.execute(
                f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE session_id = ? ORDER BY handler",
                (session_id,),
            ).fetchall()
            return call_record(row), [delivery_record(d) for d in deliveries]

        return await self._run(op)

    async def list_dead_letters(
        self, handler: str | None, session_id: str | None, since: float | None, limit: int
    ) -> list[DeliveryRecord]:
        where, params = _dead_filter(handler, session_id, since)
        return await self._run(
            lambda conn: [
                delivery_record(row)
                for row in conn.execute(
                    f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {where} ORDER BY dead_at LIMIT ?",
                    (*params, limit),
                )
            ]
        )

    async def replay_dead_letters(
        self, handler: str | None, session_id: str | None, since: float | None, now: float
    ) -> int:
        where, params = _dead_filter(handler, session_id, since)

        def op(conn: sqlite3.Connection) -> int:
            sessions = conn.execute(
                f"UPDATE deliveries SET state = {sql_value(DeliveryState.PENDING)}, attempts = 0, next_at = ?, dead_at = NULL,"
                f" first_attempt_at = NULL, replays = replays + 1 WHERE {where} RETURNING session_id",
                (now, *params),
            ).fetchall()
            _touch(conn, {row[0] for row in sessions}, now)
            return len(sessions)

        return await self._run(op)

    async def stats(self, now: float) -> Stats:
        def op(conn: sqlite3.Connection) -> Stats:
            backlog: dict[str, int] = {}
            oldest: dict[str, float] = {}
            by_state: dict[str, int] = {}
            # One query per partial index, so that none of them scans the table. Terminal states
            # (delivered, skipped) are not counted here: their totals are counters.
            for stage, states, column in (
                ("start", TO_START, "received_at"),
                ("analysis", IN_FLIGHT, "coalesce(started_at, received_at)"),
                (None, ANALYSED, "finished_at"),
            ):
                rows = conn.execute(
                    f"SELECT state, count(*), min({column}) FROM calls WHERE state IN {sql_in(*states)}"
                    " GROUP BY state"
                ).fetchall()
                by_state |= {r[0]: r[1] for r in rows}
                if stage is not None:
                    backlog[stage] = sum(r[1] for r in rows)
                    first = min((r[2] for r in rows if r[2] is not None), default=None)
                    oldest[stage] = max(0.0, now - first) if first is not None else 0.0
            row = conn.execute(
                f"SELECT count(*), min(created_at) FROM deliveries WHERE state = {sql_value(DeliveryState.PENDING)}"
            ).fetchone()
            backlog["delivery"] = row[0]
            oldest["delivery"] = max(0.0, now - row[1]) if row[1] is not None else 0.0
            dead = {
                r[0]: r[1]
                for r in conn.execute(
                    f"SELECT handler, count(*) FROM deliveries WHERE state = {sql_value(DeliveryState.DEAD)} GROUP BY handler"
                )
            }
            orphaned = {
                r[0]: r[1]
                for r in conn.execute(
                    f"SELECT handler, count(*) FROM deliveries WHERE state = {sql_value(DeliveryState.ORPHANED)} GROUP BY handler"
                )
            }
            return Stats(
                backlog=backlog, oldest=oldest, dead_letters=dead, calls_by_state=by_state, orphaned=orphaned
            )

        return await self._run(op)

    async def prune(self, events_before: float, calls_before: float, batch: int) -> tuple[int, int]:
        def op(conn: sqlite3.Connection) -> tuple[int, int]:
            events = conn.execute(
                "DELETE FROM inbound_events WHERE (source, event_id) IN (SELECT source, event_id"
                " FROM inbound_events WHERE received_at < ? LIMIT ?)",
                (events_before, batch),
            ).rowcount
            calls = conn.execute(
                f"DELETE FROM calls WHERE session_id IN (SELECT session_id FROM calls WHERE updated_at < ?"
                f" AND state IN {sql_in(*PRUNABLE)} AND NOT EXISTS (SELECT 1 FROM deliveries d"
                f" WHERE d.session_id = calls.session_id AND d.state IN {sql_in(*UNDELIVERED)}) LIMIT ?)",
                (calls_before, batch),
            ).rowcount
            return int(events), int(calls)

        return await self._run(op)


def _placeholders(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _maybe_delivered(conn: sqlite3.Connection, session_id: str, now: float) -> None:
    conn.execute(
        f"UPDATE calls SET state = {sql_value(CallState.DELIVERED)}, delivered_at = ?, updated_at = ? WHERE session_id = ?"
        f" AND state IN {sql_in(*ANALYSED)} AND NOT EXISTS (SELECT 1 FROM deliveries"
        f" WHERE session_id = ? AND state NOT IN {sql_in(*DONE)})",
        (now, now, session_id, session_id),
    )


def _dead_filter(handler: str | None, session_id: str | None, since: float | None) -> tuple[str, list[Any]]:
    clauses: list[str] = [f"state = {sql_value(DeliveryState.DEAD)}"]
    params: list[Any] = []
    if handler is not None:
        clauses.append("handler = ?")
        params.append(handler)
    if session_id is not None:
        clauses.append("session_id = ?")
        params.append(session_id)
    if since is not None:
        clauses.append("dead_at >= ?")
        params.append(since)
    return " AND ".join(clauses), params
