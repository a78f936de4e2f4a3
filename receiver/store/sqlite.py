"""SQLite backend (WAL, synchronous=FULL): the embedded store of one process.

Every operation is a function run on the database thread of ``receiver.store.groupcommit``, which
commits waiting operations together. SQLite serves one process: several replicas need PostgreSQL.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import Callable, Sequence
from enum import StrEnum
from importlib import resources
from typing import Any, TypeVar

from receiver.lifecycle import IN_FLIGHT, PRUNABLE, TO_START, UNDELIVERED, CallState
from receiver.store import (
    Accepted,
    AnalysisResult,
    CallRecord,
    DeliveryJob,
    DeliveryRecord,
    Finished,
    NewCall,
    Router,
    Stats,
    StoreError,
    StoreUnavailable,
)
from receiver.store.carriers_sqlite import SQLiteCarriers
from receiver.store.groupcommit import Database
from receiver.store.keys import delivery_id
from receiver.store.locks import ServeLock
from receiver.store.rows import CALL_COLUMNS, DELIVERY_COLUMNS, call_record, delivery_record, include_json
from receiver.store.sqlite_ops import SQLiteOperations
from receiver.store.sqlite_state import SQLiteStateMixin
from receiver.store.sqlite_state import remember as _remember
from receiver.store.sqlite_state import touch as _touch

T = TypeVar("T")


def _placeholders(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _states(states: Sequence[StrEnum]) -> str:
    """States as SQL literals (constants, never input): the planner then matches the partial indexes."""
    return ", ".join(f"'{state.value}'" for state in states)


@functools.cache
def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("receiver.store").joinpath("migrations/sqlite")
    out = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            out.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(out)


class SQLiteStore(SQLiteOperations, SQLiteStateMixin, SQLiteCarriers):
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
    ) -> Accepted:
        def op(conn: sqlite3.Connection) -> Accepted:
            if not _record_event(conn, source, event_id, event_type, call.session_id, now):
                return Accepted.DUPLICATE
            # A session analysed before (its call row may be pruned since) is never created again.
            inserted = conn.execute(
                "INSERT INTO calls (session_id, state, call_json, end_session, analysis_key, received_at,"
                " next_at, updated_at, analysis_profile, analysis_include)"
                " SELECT ?, 'received', ?, ?, ?, ?, ?, ?, ?, ?"
                " WHERE NOT EXISTS (SELECT 1 FROM analysed_sessions WHERE session_id = ?)"
                " ON CONFLICT DO NOTHING",
                (
                    call.session_id,
                    json.dumps(call.call),
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
                return Accepted.ACCEPTED
            if (
                conn.execute("SELECT 1 FROM calls WHERE session_id = ?", (call.session_id,)).fetchone()
                is None
            ):
                return Accepted.DUPLICATE  # remembered as analysed: recorded, nothing else happens
            conn.execute(
                "UPDATE calls SET call_json = json_patch(call_json, ?), end_session = max(end_session, ?),"
                " updated_at = ? WHERE session_id = ?",
                (json.dumps(call.call), int(call.end_session), now, call.session_id),
            )
            return Accepted.MERGED

        return await self._run(op)

    async def accept_analysis(
        self, source: str, event_id: str, event_type: str, result: AnalysisResult, router: Router, now: float
    ) -> tuple[Accepted, Finished | None]:
        def op(conn: sqlite3.Connection) -> tuple[Accepted, Finished | None]:
            if not _record_event(conn, source, event_id, event_type, result.session_id, now):
                return Accepted.DUPLICATE, None
            finished = _finish(conn, result, router, now)
            return (Accepted.ACCEPTED if finished else Accepted.IGNORED), finished

        return await self._run(op)

    async def request_fetch(
        self,
        source: str,
        event_id: str,
        event_type: str,
        session_id: str | None,
        analysis_id: str,
        now: float,
    ) -> Accepted:
        def op(conn: sqlite3.Connection) -> Accepted:
            if not _record_event(conn, source, event_id, event_type, session_id, now):
                return Accepted.DUPLICATE
            target = session_id or _session_of(conn, analysis_id)
            if target is None:
                return Accepted.IGNORED
            changed = conn.execute(
                f"UPDATE calls SET webhook_seen = 1, next_at = ?, analysis_id = coalesce(analysis_id, ?),"
                f" updated_at = ? WHERE session_id = ? AND state IN ({_states(TO_START + IN_FLIGHT)})"
                " AND (analysis_id IS NULL OR analysis_id = ?)",
                (now, analysis_id, now, target, analysis_id),
            ).rowcount
            if changed:
                # A call still "starting" was accepted by Kallglot: the POST answer is on its way or lost.
                conn.execute(
                    "UPDATE calls SET state = 'processing', started_at = coalesce(started_at, ?),"
                    " lease_owner = NULL, lease_until = NULL WHERE session_id = ? AND state IN ('received', 'starting')",
                    (now, target),
                )
                _remember(conn, target, now)
            return Accepted.ACCEPTED if changed else Accepted.IGNORED

        return await self._run(op)

    # --- starting ---------------------------------------------------------------------------

    async def claim_calls_to_start(
        self, limit: int, now: float, lease_seconds: float, owner: str
    ) -> list[CallRecord]:
        def op(conn: sqlite3.Connection) -> list[CallRecord]:
            rows = conn.execute(
                f"UPDATE calls SET state = 'starting', lease_owner = ?, lease_until = ?, attempts = attempts + 1,"
                f" updated_at = ? WHERE session_id IN (SELECT session_id FROM calls WHERE state IN"
                f" ({_states(TO_START)}) AND next_at <= ? AND (lease_until IS NULL OR lease_until < ?)"
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
                "UPDATE calls SET state = 'processing', next_at = CASE WHEN webhook_seen THEN ? ELSE ? END,"
                " reason = NULL, lease_owner = NULL, lease_until = NULL"
                " WHERE session_id = ? AND state IN ('received', 'starting')",
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
                f" WHERE session_id = ? AND state IN ({_states(TO_START)})",
                (next_at, reason, now, session_id),
            )
        )

    async def skip_call(self, session_id: str, reason: str, now: float) -> None:
        await self._run(
            lambda conn: conn.execute(
                f"UPDATE calls SET state = 'skipped', reason = ?, finished_at = ?, lease_owner = NULL,"
                f" lease_until = NULL, updated_at = ? WHERE session_id = ? AND state IN ({_states(TO_START)})",
                (reason, now, now, session_id),
            )
        )

    # --- following --------------------------------------------------------------------------

    async def finish(self, result: AnalysisResult, router: Router, now: float) -> Finished | None:
        return await self._run(lambda conn: _finish(conn, result, router, now))

    async def claim_calls_to_poll(
        self, limit: int, now: float, lease_seconds: float, owner: str
    ) -> list[CallRecord]:
        def op(conn: sqlite3.Connection) -> list[CallRecord]:
            rows = conn.execute(
                f"UPDATE calls SET lease_owner = ?, lease_until = ?, polls = polls + 1 WHERE session_id IN"
                f" (SELECT session_id FROM calls WHERE state IN ({_states(IN_FLIGHT)}) AND next_at <= ?"
                f" AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_at LIMIT ?) RETURNING {CALL_COLUMNS}",
                (owner, now + lease_seconds, now, now, limit),
            ).fetchall()
            return [call_record(row) for row in rows]

        return await self._run(op)

    async def schedule_poll(self, session_id: str, next_at: float, stale: bool, now: float) -> None:
        await self._run(
            lambda conn: conn.execute(
                f"UPDATE calls SET next_at = ?, lease_owner = NULL, lease_until = NULL, updated_at = ?,"
                f" state = CASE WHEN ? AND state = 'processing' THEN 'stale' ELSE state END"
                f" WHERE session_id = ? AND state IN ({_states(IN_FLIGHT)})",
                (next_at, now, int(stale), session_id),
            )
        )

    # --- delivering -------------------------------------------------------------------------

    async def claim_deliveries(
        self, handler: str, limit: int, now: float, lease_seconds: float, owner: str
    ) -> list[DeliveryJob]:
        def op(conn: sqlite3.Connection) -> list[DeliveryJob]:
            rows = conn.execute(
                f"UPDATE deliveries SET lease_owner = ?, lease_until = ?, first_attempt_at ="
                f" coalesce(first_attempt_at, ?) WHERE id IN (SELECT id FROM deliveries WHERE handler = ?"
                f" AND state = 'pending' AND next_at <= ? AND (lease_until IS NULL OR lease_until < ?)"
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
                "UPDATE deliveries SET state = 'delivered', delivered_at = ?, attempts = attempts + 1,"
                " last_error = NULL, lease_owner = NULL, lease_until = NULL WHERE id = ? AND state = 'pending'"
                " RETURNING session_id",
                (now, delivery_id),
            ).fetchone()
            if row is not None:
                _maybe_delivered(conn, row["session_id"], now)

        await self._run(op)

    async def retry_delivery(self, delivery_id: str, next_at: float, error: str, now: float) -> None:
        await self._run(
            lambda conn: conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, next_at = ?, lease_owner = NULL,"
                " lease_until = NULL WHERE id = ? AND state = 'pending'",
                (error, next_at, delivery_id),
            )
        )

    async def dead_letter(self, delivery_id: str, error: str, now: float) -> None:
        def op(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "UPDATE deliveries SET state = 'dead', attempts = attempts + 1, last_error = ?, dead_at = ?,"
                " lease_owner = NULL, lease_until = NULL WHERE id = ? AND state = 'pending' RETURNING session_id",
                (error, now, delivery_id),
            ).fetchone()
            if row is not None:  # retention reads the call's updated_at
                conn.execute("UPDATE calls SET updated_at = ? WHERE session_id = ?", (now, row[0]))

        await self._run(op)

    async def release_delivery(self, delivery_id: str, next_at: float) -> None:
        await self._run(
            lambda conn: conn.execute(
                "UPDATE deliveries SET next_at = ?, lease_owner = NULL, lease_until = NULL"
                " WHERE id = ? AND state = 'pending'",
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
                f"UPDATE deliveries SET state = 'pending', attempts = 0, next_at = ?, dead_at = NULL,"
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
                (None, (CallState.COMPLETED, CallState.FAILED), "finished_at"),
            ):
                rows = conn.execute(
                    f"SELECT state, count(*), min({column}) FROM calls WHERE state IN ({_states(states)})"
                    " GROUP BY state"
                ).fetchall()
                by_state |= {r[0]: r[1] for r in rows}
                if stage is not None:
                    backlog[stage] = sum(r[1] for r in rows)
                    first = min((r[2] for r in rows if r[2] is not None), default=None)
                    oldest[stage] = max(0.0, now - first) if first is not None else 0.0
            row = conn.execute(
                "SELECT count(*), min(created_at) FROM deliveries WHERE state = 'pending'"
            ).fetchone()
            backlog["delivery"] = row[0]
            oldest["delivery"] = max(0.0, now - row[1]) if row[1] is not None else 0.0
            dead = {
                r[0]: r[1]
                for r in conn.execute(
                    "SELECT handler, count(*) FROM deliveries WHERE state = 'dead' GROUP BY handler"
                )
            }
            orphaned = {
                r[0]: r[1]
                for r in conn.execute(
                    "SELECT handler, count(*) FROM deliveries WHERE state = 'orphaned' GROUP BY handler"
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
                f" AND state IN ({_states(PRUNABLE)}) AND NOT EXISTS (SELECT 1 FROM deliveries d"
                f" WHERE d.session_id = calls.session_id AND d.state IN ({_states(UNDELIVERED)})) LIMIT ?)",
                (calls_before, batch),
            ).rowcount
            return int(events), int(calls)

        return await self._run(op)


# --- operations run on the database thread ----------------------------------------------------


def _migrate(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    count = 0
    for version, sql in _migrations():
        if version in done:
            continue
        for statement in sql.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, strftime('%s', 'now'))", (version,))
        count += 1
    return count


def _is_migrated(conn: sqlite3.Connection) -> bool:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if not exists:
        return False
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    return all(version in done for version, _ in _migrations())


def _release_all_leases(conn: sqlite3.Connection) -> int:
    calls = conn.execute(
        "UPDATE calls SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL"
    ).rowcount
    deliveries = conn.execute(
        "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL"
    ).rowcount
    return int(calls) + int(deliveries)


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


def _finish(conn: sqlite3.Connection, result: AnalysisResult, router: Router, now: float) -> Finished | None:
    session_id = result.session_id or (_session_of(conn, result.analysis_id) if result.analysis_id else None)
    if session_id is None:
        return None
    row = conn.execute(
        "SELECT state, analysis_id, call_json, webhook_seen, started_at FROM calls WHERE session_id = ?",
        (session_id,),
    ).fetchone()
    if row is None or CallState(row["state"]) not in (*TO_START, *IN_FLIGHT):
        return None
    if row["analysis_id"] and result.analysis_id and row["analysis_id"] != result.analysis_id:
        return None
    via = "webhook" if row["webhook_seen"] else result.via
    call = json.loads(row["call_json"])
    handlers = list(dict.fromkeys(router(session_id, call, result)))
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
        " VALUES (?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT DO NOTHING",
        [(delivery_id(session_id, handler), session_id, handler, status, now, now) for handler in handlers],
    )
    return Finished(session_id=session_id, via=via, started_at=row["started_at"], deliveries=len(handlers))


def _maybe_delivered(conn: sqlite3.Connection, session_id: str, now: float) -> None:
    conn.execute(
        "UPDATE calls SET state = 'delivered', delivered_at = ?, updated_at = ? WHERE session_id = ?"
        " AND state IN ('completed', 'failed') AND NOT EXISTS (SELECT 1 FROM deliveries"
        " WHERE session_id = ? AND state != 'delivered')",
        (now, now, session_id, session_id),
    )


def _dead_filter(handler: str | None, session_id: str | None, since: float | None) -> tuple[str, list[Any]]:
    clauses: list[str] = ["state = 'dead'"]
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
