"""Operator actions on the outbox, shared by every backend: replay and handler pauses.

Replay never starts an analysis: it only makes deliveries of finished calls pending again (or
creates them for a handler that never had one: a backfill), stamped with the replay's id, and
reopens a ``delivered`` call until they are done. Every replay, dry runs included, is recorded.
The SQL is written once with ``?`` parameters (see ``receiver.store.query``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from receiver.lifecycle import FINISHED, CallState, DeliveryState, sql_in, sql_value
from receiver.store.query import CallQuery, Dialect, call_filter

FINISHED_STATES = sql_in(*FINISHED)
#: Delivery states that replay acts on (pending work is already queued).
SETTLED = sql_in(DeliveryState.DELIVERED, DeliveryState.DEAD, DeliveryState.ORPHANED, DeliveryState.FILTERED)


@dataclass(frozen=True)
class ReplayRequest:
    """By ``delivery_ids``, or by ``query`` (+ ``handlers``: only these, created where missing)."""

    who: str
    configured: tuple[str, ...]  # handlers that exist now: nothing is queued for another one
    delivery_ids: tuple[str, ...] = ()
    query: CallQuery | None = None
    handlers: tuple[str, ...] = ()
    dry_run: bool = False
    description: dict[str, Any] = field(default_factory=dict)  # what was asked, for the log


@dataclass(frozen=True)
class ReplayOutcome:
    replay_id: str
    matched: int
    replayed: int


@dataclass(frozen=True)
class Attempt:
    """One try at starting a call's analysis (``kind="start"``) or at a delivery (``"delivery"``)."""

    session_id: str
    at: float
    kind: str
    outcome: str  # started, retry, paused, failed, skipped / delivered, retry, dead, filtered
    handler: str | None = None
    code: int | None = None  # the answer's HTTP status, where there was one
    reason: str | None = None
    next_at: float | None = None
    request_id: str | None = None  # Kallglot's X-Request-ID of the answer (start attempts)


@dataclass(frozen=True)
class ReplayRecord:
    id: str
    who: str
    at: float
    dry_run: bool
    request: dict[str, Any]
    matched: int
    replayed: int


def _values(handlers: tuple[str, ...]) -> str:
    """A one-column table of ``handlers`` that both SQLite and PostgreSQL accept."""
    return " UNION ALL ".join("SELECT CAST(? AS TEXT) AS handler" for _ in handlers)


def existing_sql(request: ReplayRequest, dialect: Dialect) -> tuple[str, list[Any]]:
    """``SELECT d.id`` of the settled deliveries that the replay re-queues."""
    targets = request.handlers or request.configured
    if not targets:
        return "SELECT d.id FROM deliveries d WHERE FALSE", []
    in_targets = f"d.handler IN ({','.join('?' * len(targets))})"
    if request.delivery_ids:
        sql = (
            f"SELECT d.id FROM deliveries d WHERE d.id IN ({','.join('?' * len(request.delivery_ids))})"
            f" AND d.state IN {SETTLED} AND {in_targets}"
        )
        return sql, [*request.delivery_ids, *targets]
    assert request.query is not None
    where = call_filter(request.query, dialect, paged=False)
    sql = (
        "SELECT d.id FROM deliveries d JOIN calls c ON c.session_id = d.session_id"
        f" WHERE {where.sql()} AND c.state IN {FINISHED_STATES} AND d.state IN {SETTLED} AND {in_targets}"
    )
    return sql, [*where.params, *targets]


def missing_sql(request: ReplayRequest, dialect: Dialect) -> tuple[str, list[Any]] | None:
    """(session, handler, status) of the deliveries a backfill creates (named handlers only)."""
    if request.delivery_ids or not request.handlers or request.query is None:
        return None
    where = call_filter(request.query, dialect, paged=False)
    status = dialect.field("c.analysis_json", "status")
    sql = (
        f"SELECT c.session_id, h.handler, CASE WHEN {status} = {sql_value(CallState.FAILED)} THEN {sql_value(CallState.FAILED)} ELSE {sql_value(CallState.COMPLETED)} END"
        f" AS status FROM calls c CROSS JOIN ({_values(request.handlers)}) h"
        f" WHERE {where.sql()} AND c.state IN {FINISHED_STATES} AND NOT EXISTS (SELECT 1 FROM deliveries d"
        " WHERE d.session_id = c.session_id AND d.handler = h.handler)"
    )
    return sql, [*request.handlers, *where.params]


def requeue_sql(existing: str) -> str:
    """Params: now, replay id, then the ``existing`` query's."""
    return (
        f"UPDATE deliveries SET state = {sql_value(DeliveryState.PENDING)}, attempts = 0, next_at = ?, last_error = NULL,"
        " first_attempt_at = NULL, delivered_at = NULL, dead_at = NULL, lease_owner = NULL,"
        f" lease_until = NULL, replays = replays + 1, replay_id = ? WHERE id IN ({existing})"
    )


INSERT_DELIVERY = (
    "INSERT INTO deliveries (id, session_id, handler, status, state, created_at, next_at, replay_id)"
    f" VALUES (?, ?, ?, ?, {sql_value(DeliveryState.PENDING)}, ?, ?, ?) ON CONFLICT DO NOTHING"
)

# A delivered call is open again until its replayed deliveries are done. Params: now, replay id.
REOPEN_CALLS = (
    f"UPDATE calls SET state = (SELECT CASE WHEN min(d.status) = {sql_value(CallState.FAILED)} THEN {sql_value(CallState.FAILED)} ELSE {sql_value(CallState.COMPLETED)} END"
    " FROM deliveries d WHERE d.session_id = calls.session_id), delivered_at = NULL, updated_at = ?"
    f" WHERE state = {sql_value(CallState.DELIVERED)} AND session_id IN (SELECT session_id FROM deliveries WHERE replay_id = ?)"
)

RECORD_REPLAY = (
    "INSERT INTO replays (id, who, at, dry_run, request_json, matched, replayed) VALUES (?, ?, ?, ?, ?, ?, ?)"
)

LIST_REPLAYS = (
    "SELECT id, who, at, dry_run, request_json, matched, replayed FROM replays ORDER BY at DESC LIMIT ?"
)

PAUSE = (
    "INSERT INTO handler_pauses (handler, who, paused_at) VALUES (?, ?, ?) ON CONFLICT (handler) DO NOTHING"
)
RESUME = "DELETE FROM handler_pauses WHERE handler = ?"
PAUSED = "SELECT handler, who, paused_at FROM handler_pauses ORDER BY handler"

# Replicas count each other (RECEIVER_KALLGLOT_RATE_SHARE unset): a heartbeat, then the live ones.
REPLICA_SEEN = (
    "INSERT INTO replicas (replica_id, seen_at) VALUES (?, ?)"
    " ON CONFLICT (replica_id) DO UPDATE SET seen_at = EXCLUDED.seen_at"
)
REPLICAS_FORGET = "DELETE FROM replicas WHERE seen_at < ?"
REPLICAS_ALIVE = "SELECT count(*) FROM replicas"  # after REPLICAS_FORGET: the live ones
REPLICA_GONE = "DELETE FROM replicas WHERE replica_id = ?"

PENDING_BY_HANDLER = f"SELECT handler, count(*), min(created_at) FROM deliveries WHERE state = {sql_value(DeliveryState.PENDING)} GROUP BY handler"

RECORD_ATTEMPT = (
    "INSERT INTO attempts (session_id, at, kind, handler, outcome, code, reason, next_at, request_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
LIST_ATTEMPTS = (
    "SELECT session_id, at, kind, outcome, handler, code, reason, next_at, request_id FROM attempts"
    " WHERE session_id = ? ORDER BY at, kind"
)


def attempt_params(a: Attempt) -> tuple[object, ...]:
    return (a.session_id, a.at, a.kind, a.handler, a.outcome, a.code, a.reason, a.next_at, a.request_id)
