"""SQLite backend (WAL, synchronous=FULL): the embedded store of one process.

Every operation is a function run on the database thread of ``receiver.store.groupcommit``, which
commits waiting operations together. SQLite serves one process: several replicas need PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from receiver.lifecycle import (
    IN_FLIGHT,
    TO_START,
    CallState,
    DeliveryState,
    sql_in,
    sql_value,
)
from receiver.store import (
    AnalysisResult,
    CallRecord,
    EventOutcome,
    Finished,
    NewCall,
    StoreError,
    StoreUnavailable,
)
from receiver.store.carriers_sqlite import SQLiteCarriers
from receiver.store.groupcommit import Database
from receiver.store.keys import delivery_id
from receiver.store.locks import ServeLock
from receiver.store.rows import CALL_COLUMNS, call_record, include_json
from receiver.store.sqlite_ops import SQLiteOperations
from receiver.store.sqlite_outbox import SQLiteOutboxMixin
from receiver.store.sqlite_schema import is_migrated as _is_migrated
from receiver.store.sqlite_schema import migrate as _migrate
from receiver.store.sqlite_schema import release_all_leases as _release_all_leases
from receiver.store.sqlite_state import SQLiteStateMixin
from receiver.store.sqlite_state import remember as _remember

T = TypeVar("T")


class SQLiteStore(SQLiteOperations, SQLiteStateMixin, SQLiteOutboxMixin, SQLiteCarriers):
    """The embedded store (see module docstring). ``path`` is a file path or ``:memory:``."""

    def __init__(self, path: str, *, read_only: bool = False) -> None:
        self._path = path
        self._read_only = read_only
        self._db: Database | None = None
        self._serve_lock: ServeLock | None = None

    async def _run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            raise StoreUnavailable("the store is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._db.submit(op, future)
        return await future

    async def open(self) -> None:
        if self._db is not None:
            return
        db = Database(self._path, read_only=self._read_only)
        await asyncio.to_thread(db.start_and_wait)
        self._db = db

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await asyncio.to_thread(db.stop)
        lock, self._serve_lock = self._serve_lock, None
        if lock is not None:
            lock.release()

    async def migrate(self) -> int:
        return await self._run(_migrate)

    async def release_stale_leases(self, now: float) -> int:
        """Only ``serve`` calls this. It takes the file's serve lock for as long as the store is
        open: holding it proves that no other serve is alive, so every lease in the file belongs
        to a dead process and is released at once. Without the lock (another serve holds it)
        nothing is released: those leases are alive, or expire by themselves."""
        if self._path == ":memory:":
            return 0
        if self._serve_lock is None:
            lock = ServeLock(self._path)
            if not lock.acquire():
                return 0
            self._serve_lock = lock
        return await self._run(_release_all_leases)

    async def ready(self) -> bool:
        try:
            return await self._run(_is_migrated)
        except StoreError:
            return False

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """One process owns the file: nobody else creates work."""

    # --- inbound ----------------------------------------------------------------------------

    async def accept_call(
        self, source: str, event_id: str, event_type: str, call: NewCall, now: float
    ) -> EventOutcome:
        def op(conn: sqlite3.Connection) -> EventOutcome:
            if not _record_event(conn, source, event_id, event_type, call.session_id, now):
                return EventOutcome.DUPLICATE
            # A session analysed before (its call row may be pruned since) is never created again.
            inserted = conn.execute(
                _INSERT_CALL,
                (
                    call.session_id,
                    json.dumps(call.fields),
                    int(call.end_session),
                    call.analysis_key,
                    now,
                    now,
                    now,
                    call.profile,
                    include_json(call.include),
                    call.session_id,
                ),
            ).rowcount
            if inserted:
                return EventOutcome.ACCEPTED
            if (
                conn.execute("SELECT 1 FROM calls WHERE session_id = ?", (call.session_id,)).fetchone()
                is None
            ):
                return EventOutcome.DUPLICATE  # remembered as analysed: recorded, nothing else happens
            conn.execute(
                "UPDATE calls SET call_json = json_patch(call_json, ?), end_session = max(end_session, ?),"
                " updated_at = ? WHERE session_id = ?",
                (json.dumps(call.fields), int(call.end_session), now, call.session_id),
            )
            return EventOutcome.MERGED

        return await self._run(op)

    async def accept_analysis(
        self,
        source: str,
        event_id: str,
        event_type: str,
        result: AnalysisResult,
        handlers: Sequence[str],
        now: float,
    ) -> tuple[EventOutcome, Finished | None]:
        def op(conn: sqlite3.Connection) -> tuple[EventOutcome, Finished | None]:
            if not _record_event(conn, source, event_id, event_type, result.session_id, now):
                return EventOutcome.DUPLICATE, None
            finished = _record_result(conn, result, handlers, now)
            return (EventOutcome.ACCEPTED if finished else EventOutcome.IGNORED), finished

        return await self._run(op)

    async def request_fetch(
        self,
        source: str,
        event_id: str,
        event_type: str,
        session_id: str | None,
        analysis_id: str,
        now: float,
    ) -> EventOutcome:
        def op(conn: sqlite3.Connection) -> EventOutcome:
            if not _record_event(conn, source, event_id, event_type, session_id, now):
                return EventOutcome.DUPLICATE
            target = session_id or _session_of(conn, analysis_id)
            if target is None:
                return EventOutcome.IGNORED
            changed = conn.execute(
                f"UPDATE calls SET webhook_seen = 1, next_at = ?, analysis_id = coalesce(analysis_id, ?),"
                f" updated_at = ? WHERE session_id = ? AND state IN {sql_in(*TO_START, *IN_FLIGHT)}"
                " AND (analysis_id IS NULL OR analysis_id = ?)",
                (now, analysis_id, now, target, analysis_id),
            ).rowcount
            if changed:
                # A call still "starting" was accepted by Kallglot: the POST answer is on its way or lost.
                conn.execute(
                    f"UPDATE calls SET state = {sql_value(CallState.PROCESSING)}, started_at = coalesce(started_at, ?),"
                    f" lease_owner = NULL, lease_until = NULL WHERE session_id = ? AND state IN {sql_in(*TO_START)}",
                    (now, target),
                )
                _remember(conn, target, now)
            return EventOutcome.ACCEPTED if changed else EventOutcome.IGNORED

        return await self._run(op)

    # --- starting ---------------------------------------------------------------------------

    async def claim_calls_to_start(
        self, limit: int, now: float, lease_seconds: float, owner: str
    ) -> list[CallRecord]:
        def op(conn: sqlite3.Connection) -> list[CallRecord]:
            rows = conn.execute(
                f"UPDATE calls SET state = {sql_value(CallState.STARTING)}, lease_owner = ?, lease_until = ?, attempts = attempts + 1,"
                f" updated_at = ? WHERE session_id IN (SELECT session_id FROM calls WHERE state IN"
                f" {sql_in(*TO_START)} AND next_at <= ? AND (lease_until IS NULL OR lease_until < ?)"
                f" ORDER BY next_at LIMIT ?) RETURNING {CALL_COLUMNS}",
                (owner, now + lease_seconds, now, now, now, limit),
            ).fetchall()
            return sorted((call_record(row) for row in rows), key=lambda c: c.next_at)

        return await self._run(op)

    async def mark_started(self, session_id: str, analysis_id: str, first_poll_at: float, now: float) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE calls SET analysis_id = coalesce(analysis_id, ?), started_at = coalesce(started_at, ?),"
                " updated_at = ? WHERE session_id = ?",
                (analysis_id, now, now, session_id),
            )
            conn.execute(
                f"UPDATE calls SET state = {sql_value(CallState.PROCESSING)}, next_at = CASE WHEN webhook_seen THEN ? ELSE ? END,"
                " reason = NULL, lease_owner = NULL, lease_until = NULL"
                f" WHERE session_id = ? AND state IN {sql_in(*TO_START)}",
                (now, first_poll_at, session_id),
            )
            _remember(conn, session_id, now)

        await self._run(op)

    async def mark_session_ended(self, session_id: str, now: float) -> None:
        await self._run(
            lambda conn: conn.execute(
                "UPDATE calls SET end_session = 0, updated_at = ? WHERE session_id = ?",
                (now, session_id),
            )
        )

    async def retry_call(self, session_id: str, next_at: float, reason: str, now: float) -> None:
        await self._run(
            lambda conn: conn.execute(
                f"UPDATE calls SET next_at = ?, reason = ?, lease_owner = NULL, lease_until = NULL, updated_at = ?"
                f" WHERE session_id = ? AND state IN {sql_in(*TO_START)}",
                (next_at, reason, now, session_id),
            )
        )

    async def skip_call(self, session_id: str, reason: str, now: float) -> None:
        await self._run(
            lambda conn: conn.execute(
                f"UPDATE calls SET state = {sql_value(CallState.SKIPPED)}, reason = ?, finished_at = ?, lease_owner = NULL,"
                f" lease_until = NULL, updated_at = ? WHERE session_id = ? AND state IN {sql_in(*TO_START)}",
                (reason, now, now, session_id),
            )
        )

    # --- following --------------------------------------------------------------------------

    async def record_result(
        self, result: AnalysisResult, handlers: Sequence[str], now: float
    ) -> Finished | None:
        return await self._run(lambda conn: _record_result(conn, result, handlers, now))

    async def claim_calls_to_poll(
        self, limit: int, now: float, lease_seconds: float, owner: str
    ) -> list[CallRecord]:
        def op(conn: sqlite3.Connection) -> list[CallRecord]:
            rows = conn.execute(
                f"UPDATE calls SET lease_owner = ?, lease_until = ?, polls = polls + 1 WHERE session_id IN"
                f" (SELECT session_id FROM calls WHERE state IN {sql_in(*IN_FLIGHT)} AND next_at <= ?"
                f" AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_at LIMIT ?) RETURNING {CALL_COLUMNS}",
                (owner, now + lease_seconds, now, now, limit),
            ).fetchall()
            return [call_record(row) for row in rows]

        return await self._run(op)

    async def schedule_poll(self, session_id: str, next_at: float, stale: bool, now: float) -> None:
        await self._run(
            lambda conn: conn.execute(
                f"UPDATE calls SET next_at = ?, lease_owner = NULL, lease_until = NULL, updated_at = ?,"
                f" state = CASE WHEN ? AND state = {sql_value(CallState.PROCESSING)} THEN {sql_value(CallState.STALE)} ELSE state END"
                f" WHERE session_id = ? AND state IN {sql_in(*IN_FLIGHT)}",
                (next_at, now, int(stale), session_id),
            )
        )


# --- operations run on the database thread ----------------------------------------------------


# Built once: an f-string in the op would be formatted (and its statement looked up) per event.
_INSERT_CALL = (
    "INSERT INTO calls (session_id, state, call_json, end_session, analysis_key, received_at,"
    " next_at, updated_at, analysis_profile, analysis_include)"
    f" SELECT ?, {sql_value(CallState.RECEIVED)}, ?, ?, ?, ?, ?, ?, ?, ?"
    " WHERE NOT EXISTS (SELECT 1 FROM analysed_sessions WHERE session_id = ?)"
    " ON CONFLICT DO NOTHING"
)


def _record_event(
    conn: sqlite3.Connection, source: str, event_id: str, event_type: str, session_id: str | None, now: float
) -> bool:
    inserted = conn.execute(
        "INSERT INTO inbound_events (source, event_id, type, session_id, received_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (source, event_id, event_type, session_id, now),
    ).rowcount
    return bool(inserted)


def _session_of(conn: sqlite3.Connection, analysis_id: str) -> str | None:
    row = conn.execute("SELECT session_id FROM calls WHERE analysis_id = ?", (analysis_id,)).fetchone()
    return row[0] if row else None


def _record_result(
    conn: sqlite3.Connection, result: AnalysisResult, subscribed: Sequence[str], now: float
) -> Finished | None:
    session_id = result.session_id or (_session_of(conn, result.analysis_id) if result.analysis_id else None)
    if session_id is None:
        return None
    row = conn.execute(
        "SELECT state, analysis_id, webhook_seen, started_at FROM calls WHERE session_id = ?",
        (session_id,),
    ).fetchone()
    if row is None or CallState(row["state"]) not in (*TO_START, *IN_FLIGHT):
        return None
    if row["analysis_id"] and result.analysis_id and row["analysis_id"] != result.analysis_id:
        return None
    via = "webhook" if row["webhook_seen"] else result.via
    handlers = list(dict.fromkeys(subscribed))
    state = result.state if handlers else CallState.DELIVERED
    conn.execute(
        "UPDATE calls SET state = ?, analysis_id = coalesce(analysis_id, ?), analysis_json = ?, reason = ?,"
        " finished_at = ?, finished_via = ?, delivered_at = ?, started_at = coalesce(started_at, ?),"
        " lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE session_id = ?",
        (
            state,
            result.analysis_id,
            json.dumps(result.analysis),
            result.reason,
            now,
            via,
            None if handlers else now,
            now,
            now,
            session_id,
        ),
    )
    _remember(conn, session_id, now)
    status = "completed" if result.state is CallState.COMPLETED else "failed"
    conn.executemany(
        "INSERT INTO deliveries (id, session_id, handler, status, state, created_at, next_at)"
        f" VALUES (?, ?, ?, ?, {sql_value(DeliveryState.PENDING)}, ?, ?) ON CONFLICT DO NOTHING",
        [(delivery_id(session_id, handler), session_id, handler, status, now, now) for handler in handlers],
    )
    return Finished(session_id=session_id, via=via, started_at=row["started_at"], deliveries=len(handlers))
