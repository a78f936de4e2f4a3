"""PostgreSQL backend for several replicas, on asyncpg with its connection pool.

Why asyncpg rather than psycopg 3: the store is async-only and sits on the hot path of every event,
and asyncpg speaks the binary protocol natively, prepares and caches every statement per
connection without being asked (each use case below is one or two prepared statements), ships a
mature pool that replaces broken connections by itself after an outage, and delivers LISTEN/NOTIFY
on the event loop without a polling thread. psycopg 3 would do the job too; its strengths (sync
and async in one API, server-side cursors, COPY ergonomics) are not what this service needs.

Semantics are those of ``receiver.store.Store`` and the SQLite backend, made safe for concurrent
replicas:

- inbound dedup and call creation are ``INSERT … ON CONFLICT`` on primary keys, so two replicas
  receiving duplicates of one event at the same moment store it once;
- work is claimed with ``FOR UPDATE SKIP LOCKED`` and a lease (``lease_until``); a replica that
  dies leaves its leases to expire and the others take the work over;
- finishing a call locks its row first, so two results racing create its deliveries once, and
  marking a delivery done locks the call row, so the last handler always moves it to ``delivered``;
- writes that create work ``NOTIFY`` the other replicas (``subscribe``); polling stays the fallback;
- every driver error is translated at this boundary: connection trouble becomes
  ``StoreUnavailable`` (HTTP 503, workers back off), anything else ``StoreError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from receiver.lifecycle import CallState
from receiver.store import (
    AnalysisResult,
    CallRecord,
    EventOutcome,
    Finished,
    NewCall,
    StoreError,
    StoreUnavailable,
)
from receiver.store import postgres_sql as sql
from receiver.store import postgres_state_sql as state_sql
from receiver.store.carriers_postgres import PostgresCarriers
from receiver.store.keys import delivery_id
from receiver.store.pgbatch import AcceptBatcher, Pending
from receiver.store.postgres_listen import CHANNEL, PostgresListenerMixin
from receiver.store.postgres_ops import PostgresOperations
from receiver.store.postgres_outbox import PostgresOutboxMixin
from receiver.store.postgres_schema import PostgresSchemaMixin, migrations
from receiver.store.postgres_state import PostgresStateMixin
from receiver.store.rows import call_record, include_json

_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,  # the connection died in the middle of an operation
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a failover left us on a standby
    OSError,
    TimeoutError,
)


_DRIVER_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *_CONNECTION_ERRORS)


async def _keep_session(conn: Connection) -> None:
    """Pool release without asyncpg's reset query (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN
    *; RESET ALL``): a second round trip after every store call, for session state the pool's
    connections never take (no cursors outside a transaction, no LISTEN, only ``SET LOCAL``; the
    migration lock is released or its connection terminated). An open transaction is still rolled
    back by the pool before this runs."""


def _translate(exc: BaseException) -> StoreError:
    if isinstance(exc, _CONNECTION_ERRORS):
        return StoreUnavailable(f"PostgreSQL unavailable: {type(exc).__name__}: {exc}")
    return StoreError(f"PostgreSQL: {type(exc).__name__}: {exc}")


if TYPE_CHECKING:
    Connection: TypeAlias = (
        asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
    )


class PostgresStore(
    PostgresOperations,
    PostgresStateMixin,
    PostgresOutboxMixin,
    PostgresSchemaMixin,
    PostgresListenerMixin,
    PostgresCarriers,
):
    """The replicated store (see module docstring).

    ``options``: ``min_size``/``max_size`` of the pool (1/10), ``connect_timeout`` (5 s),
    ``command_timeout`` (30 s), ``ready_timeout`` (2 s), ``statement_cache_size`` (0 behind a
    transaction-mode pgbouncer).
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
        ready_timeout: float = 2.0,
        statement_cache_size: int = 100,
        read_only: bool = False,
    ) -> None:
        self._url = url.replace("postgres://", "postgresql://", 1)
        self._min_size, self._max_size = min_size, max_size
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._ready_timeout = ready_timeout
        self._statement_cache_size = statement_cache_size
        # Operator commands beside a live service: every transaction is read-only on the server.
        self._server_settings = {"default_transaction_read_only": "on"} if read_only else None
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._listener: asyncio.Task[None] | None = None
        # Our own NOTIFYs carry this token so that only the OTHER replicas act on them.
        self._token = uuid.uuid4().hex[:12]
        self._migrated = False
        # Concurrent inbound events share one statement and one COMMIT (see pgbatch).
        self._batcher = AcceptBatcher(self._accept_many, self._accept_one)

    def _notify(self, kind: str) -> str:
        return f"{kind}:{self._token}"

    @contextlib.asynccontextmanager
    async def _conn(self, timeout: float | None = None) -> AsyncIterator[Connection]:
        """A pooled connection; every driver error leaves as StoreUnavailable or StoreError."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the store is not open")
        try:
            async with pool.acquire(timeout=timeout or self._connect_timeout) as conn:
                yield conn
        except StoreError:
            raise
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from exc
        except Exception as exc:
            if type(exc).__module__.startswith("asyncpg"):  # anything else the driver may raise
                raise _translate(exc) from exc
            raise

    # --- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
                statement_cache_size=self._statement_cache_size,
                max_inactive_connection_lifetime=60.0,
                server_settings=self._server_settings,
                reset=_keep_session,
            )
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from exc

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), timeout=10)
            pool.terminate()

    async def release_stale_leases(self, now: float) -> int:
        """Replicas share the database: a dead replica's leases expire by themselves (never taken)."""
        return 0

    async def ready(self) -> bool:
        try:
            async with asyncio.timeout(self._ready_timeout), self._conn(self._ready_timeout) as conn:
                if not self._migrated:
                    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
                    if not exists:
                        return False
                    done = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
                    self._migrated = all(version in done for version, _ in migrations())
                    return self._migrated
                await conn.fetchval("SELECT 1")
                return True
        except (StoreError, TimeoutError):
            return False

    # --- inbound ------------------------------------------------------------------------------

    async def accept_call(
        self, source: str, event_id: str, event_type: str, call: NewCall, now: float
    ) -> EventOutcome:
        return await self._batcher.accept(source, event_id, event_type, call, now)

    async def _accept_many(self, columns: list[list[Any]]) -> list[Any]:
        async with self._conn() as conn:
            return list(await conn.fetch(sql.ACCEPT_CALLS, *columns, CHANNEL, self._notify("start")))

    async def _accept_one(self, item: Pending) -> EventOutcome:
        call = item.call
        async with self._conn() as conn:
            row = await conn.fetchrow(
                sql.ACCEPT_CALL,
                item.source,
                item.event_id,
                item.event_type,
                call.session_id,
                json.dumps(call.fields),
                call.end_session,
                call.analysis_key,
                item.now,
                CHANNEL,
                self._notify("start"),
                call.profile,
                include_json(call.include),
            )
        assert row is not None
        if not row["fresh"] or row["inserted"] is None:  # a repeat, or a session analysed before
            return EventOutcome.DUPLICATE
        return EventOutcome.ACCEPTED if row["inserted"] else EventOutcome.MERGED

    async def accept_analysis(
        self,
        source: str,
        event_id: str,
        event_type: str,
        result: AnalysisResult,
        handlers: Sequence[str],
        now: float,
    ) -> tuple[EventOutcome, Finished | None]:
        async with self._conn() as conn, conn.transaction():
            fresh = await conn.fetchval(
                sql.RECORD_EVENT, source, event_id, event_type, result.session_id, now
            )
            if fresh is None:
                return EventOutcome.DUPLICATE, None
            finished = await self._record_result(conn, result, handlers, now)
        return (EventOutcome.ACCEPTED if finished else EventOutcome.IGNORED), finished

    async def request_fetch(
        self,
        source: str,
        event_id: str,
        event_type: str,
        session_id: str | None,
        analysis_id: str,
        now: float,
    ) -> EventOutcome:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                sql.REQUEST_FETCH,
                source,
                event_id,
                event_type,
                session_id,
                analysis_id,
                now,
                CHANNEL,
                self._notify("poll"),
            )
            if row is not None and row["changed"]:
                await conn.execute(state_sql.REMEMBER_BY_ANALYSIS, analysis_id, now)
        assert row is not None
        if not row["fresh"]:
            return EventOutcome.DUPLICATE
        return EventOutcome.ACCEPTED if row["changed"] else EventOutcome.IGNORED

    # --- starting -----------------------------------------------------------------------------

    async def claim_calls_to_start(
        self, limit: int, now: float, lease_seconds: float, owner: str
    ) -> list[CallRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(sql.CLAIM_START, owner, now + lease_seconds, now, limit)
        return sorted((call_record(row) for row in rows), key=lambda c: c.next_at)

    async def mark_started(self, session_id: str, analysis_id: str, first_poll_at: float, now: float) -> None:
        async with self._conn() as conn:
            await conn.execute(state_sql.MARK_STARTED_REMEMBERED, session_id, analysis_id, first_poll_at, now)

    async def mark_session_ended(self, session_id: str, now: float) -> None:
        async with self._conn() as conn:
            await conn.execute(sql.MARK_SESSION_ENDED, session_id, now)

    async def retry_call(self, session_id: str, next_at: float, reason: str, now: float) -> None:
        async with self._conn() as conn:
            await conn.execute(sql.RETRY_CALL, session_id, next_at, reason, now)

    async def skip_call(self, session_id: str, reason: str, now: float) -> None:
        async with self._conn() as conn:
            await conn.execute(sql.SKIP_CALL, session_id, reason, now)

    # --- following ----------------------------------------------------------------------------

    async def record_result(
        self, result: AnalysisResult, handlers: Sequence[str], now: float
    ) -> Finished | None:
        async with self._conn() as conn, conn.transaction():
            return await self._record_result(conn, result, handlers, now)

    async def _record_result(
        self, conn: Connection, result: AnalysisResult, subscribed: Sequence[str], now: float
    ) -> Finished | None:
        """Inside a transaction: lock the call, check it is unfinished, write (2 statements)."""
        if result.session_id is None and result.analysis_id is None:
            return None
        row = await conn.fetchrow(sql.LOCK_FOR_FINISH, result.session_id, result.analysis_id)
        if row is None or CallState(row["state"]) not in (
            CallState.RECEIVED,
            CallState.STARTING,
            CallState.PROCESSING,
            CallState.STALE,
        ):
            return None
        if row["analysis_id"] and result.analysis_id and row["analysis_id"] != result.analysis_id:
            return None
        session_id: str = row["session_id"]
        via = "webhook" if row["webhook_seen"] else result.via
        handlers = list(dict.fromkeys(subscribed))
        state = result.state if handlers else CallState.DELIVERED
        await conn.execute(
            sql.FINISH,
            session_id,
            state.value,
            result.analysis_id,
            json.dumps(result.analysis),
            result.reason,
            now,
            via,
            None if handlers else now,
            "completed" if result.state is CallState.COMPLETED else "failed",
            [delivery_id(session_id, handler) for handler in handlers],
            handlers,
            CHANNEL,
            self._notify("deliver"),
        )
        await conn.execute(state_sql.REMEMBER, session_id, now)
        return Finished(
            session_id=session_id, via=via, started_at=row["started_at"], deliveries=len(handlers)
        )

    async def claim_calls_to_poll(
        self, limit: int, now: float, lease_seconds: float, owner: str
    ) -> list[CallRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(sql.CLAIM_POLL, owner, now + lease_seconds, now, limit)
        return sorted((call_record(row) for row in rows), key=lambda c: c.next_at)

    async def schedule_poll(self, session_id: str, next_at: float, stale: bool, now: float) -> None:
        async with self._conn() as conn:
            await conn.execute(sql.SCHEDULE_POLL, session_id, next_at, now, stale)


__all__ = ["CHANNEL", "PostgresStore"]
