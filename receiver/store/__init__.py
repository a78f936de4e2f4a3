"""The storage port: use-case-sized operations every backend implements with the same semantics.

Backends are chosen by URL scheme and imported lazily (``open_store``): ``sqlite:///path`` (the
embedded default, one process) and ``postgresql://…`` (several replicas). One contract test suite
(``tests/store/test_contract.py``) runs against every backend.

Every method is atomic. Idempotency comes from structure: the inbound event id is a primary key,
a call is keyed by its session id, a delivery by (session id, handler), and call transitions are
compare-and-set on the state (see ``receiver.lifecycle``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from receiver.lifecycle import CallState, DeliveryState
from receiver.store.carrier_port import CarrierStore


class StoreError(Exception):
    """Base of the store's errors."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or written right now (HTTP 503; workers back off)."""


class EventOutcome(StrEnum):
    """What became of an inbound event."""

    ACCEPTED = "accepted"  # new call, or a finished analysis recorded
    MERGED = "merged"  # the call was known: its fields were merged, nothing else happens
    DUPLICATE = "duplicate"  # this event id was seen before
    IGNORED = "ignored"  # stored, but there is nothing to do (late, unknown or foreign analysis)


@dataclass(frozen=True)
class NewCall:
    """A call announced by an inbound event."""

    session_id: str
    analysis_key: str
    fields: dict[str, Any] = field(default_factory=dict)
    end_session: bool = False
    #: The analysis settings the key was computed from, stored with the call and sent on every
    #: attempt (``include`` in the order sent). None: the settings current at start time (old rows).
    profile: str | None = None
    include: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AnalysisResult:
    """A finished (or failed) analysis, from a webhook or a poll (session found by analysis id if None)."""

    session_id: str | None
    analysis_id: str | None
    state: CallState  # COMPLETED or FAILED
    analysis: dict[str, Any]
    via: str  # "webhook" or "poll"
    reason: str | None = None


@dataclass(frozen=True)
class Finished:
    """A call that a result has just finished (for metrics)."""

    session_id: str
    via: str
    started_at: float | None
    deliveries: int


@dataclass(frozen=True)
class CallRecord:
    session_id: str
    state: CallState
    fields: dict[str, Any]  # what the inbound events told about the call (``call`` in JSON)
    end_session: bool
    analysis_key: str
    analysis_id: str | None
    analysis: dict[str, Any] | None
    reason: str | None
    attempts: int
    polls: int
    finished_via: str | None
    received_at: float
    started_at: float | None
    finished_at: float | None
    delivered_at: float | None
    next_at: float
    updated_at: float
    analysis_profile: str | None = None
    analysis_include: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RememberedSession:
    """A session whose analysis Kallglot accepted, remembered longer than its call row."""

    session_id: str
    analysis_key: str
    analysis_id: str | None
    analysed_at: float


@dataclass(frozen=True)
class DeliveryRecord:
    id: str
    session_id: str
    handler: str
    status: str  # "completed" or "failed"
    state: DeliveryState
    attempts: int
    last_error: str | None
    created_at: float
    first_attempt_at: float | None
    next_at: float
    delivered_at: float | None
    dead_at: float | None
    replays: int


@dataclass(frozen=True)
class DeliveryJob:
    """A claimed delivery with what the handler needs to build the document."""

    delivery: DeliveryRecord
    call: dict[str, Any]
    analysis: dict[str, Any]
    analysis_id: str | None
    call_received_at: float


@dataclass(frozen=True)
class Stats:
    """Gauges for metrics: work waiting per stage, its age, dead letters, and calls per state for the
    states that are not terminal (delivered and skipped calls only grow: counters count them)."""

    backlog: dict[str, int]
    oldest: dict[str, float]
    dead_letters: dict[str, int]
    calls_by_state: dict[str, int]
    orphaned: dict[str, int] = field(default_factory=dict)


from receiver.store.operations import Attempt, ReplayOutcome, ReplayRecord, ReplayRequest  # noqa: E402
from receiver.store.query import CallQuery  # noqa: E402


class Store(CarrierStore, Protocol):
    """What the service needs from a database. Times are Unix seconds (float)."""

    async def open(self) -> None:
        """Connect. Opening never changes data (operator commands open beside a live service;
        with the ``read_only=True`` option of ``open_store`` they cannot write at all)."""

    async def release_stale_leases(self, now: float) -> int:
        """``serve`` only, at start: release leases that can only belong to dead processes
        (SQLite: all, once this process holds the file's serve lock; PostgreSQL: none, they
        expire). Return how many were released."""

    async def close(self) -> None: ...

    async def migrate(self) -> int:
        """Apply pending forward-only migrations; return how many ran. Safe to call concurrently."""

    # --- issue 8 (trust-state): leases, session memory, orphaned deliveries ----------------------

    async def renew_call_lease(self, session_id: str, owner: str, until: float, now: float) -> bool:
        """Extend ``owner``'s start lease of a call still to start to ``until``; False if the lease
        is no longer ours (another owner took it, or the call moved on)."""

    async def remembered_session(self, session_id: str) -> RememberedSession | None:
        """The record of a session already analysed (kept after its call row is pruned)."""

    async def forget_sessions(self, before: float, batch: int) -> int:
        """Delete up to ``batch`` session records analysed before ``before`` whose call row is gone."""

    async def orphan_deliveries(self, configured: Sequence[str], now: float) -> dict[str, int]:
        """Move pending deliveries of handlers not in ``configured`` to ``orphaned`` (and orphaned
        ones of a handler configured again back to pending); return every orphaned count by handler."""

    async def discard_deliveries(self, ids: Sequence[str], now: float | None = None) -> int:
        """Delete dead or orphaned deliveries (the operator gave them up); a call left with nothing
        undelivered becomes ``delivered``. Return how many were discarded."""

    async def move_deliveries(self, ids: Sequence[str], to_handler: str, now: float | None = None) -> int:
        """Give dead or orphaned deliveries to ``to_handler``: pending, due now, attempts reset, id
        ``delivery_id(session, to_handler)``. Where that handler already has the call, the moved
        delivery is dropped (the call is not delivered twice). Return how many were moved."""

    async def ready(self) -> bool:
        """True when reachable and fully migrated."""

    async def accept_call(
        self, source: str, event_id: str, event_type: str, call: NewCall, now: float
    ) -> EventOutcome:
        """Record the event id; create the call (``received``, due now) or merge its fields."""

    async def accept_analysis(
        self,
        source: str,
        event_id: str,
        event_type: str,
        result: AnalysisResult,
        handlers: Sequence[str],
        now: float,
    ) -> tuple[EventOutcome, Finished | None]:
        """Record the event id and ``record_result`` (ACCEPTED) unless the call is unknown, already
        finished or about another analysis (IGNORED)."""

    async def request_fetch(
        self,
        source: str,
        event_id: str,
        event_type: str,
        session_id: str | None,
        analysis_id: str,
        now: float,
    ) -> EventOutcome:
        """Record an analysis event that lacks its result: make the call's poll due now and remember
        that a webhook arrived (so the finish counts ``via=webhook``)."""

    async def claim_calls_to_start(
        self, limit: int, now: float, lease_seconds: float, owner: str
    ) -> list[CallRecord]:
        """Lease due ``received``/``starting`` calls and move them to ``starting``."""

    async def mark_started(self, session_id: str, analysis_id: str, first_poll_at: float, now: float) -> None:
        """Kallglot accepted the analysis: ``processing``, polled at ``first_poll_at`` unless a webhook
        finishes it first. A call already finished keeps its state."""

    async def mark_session_ended(self, session_id: str, now: float) -> None:
        """``end_session`` was done for this call (so a retry does not end it again)."""

    async def retry_call(self, session_id: str, next_at: float, reason: str, now: float) -> None:
        """Release the lease; try again at ``next_at`` (state unchanged)."""

    async def skip_call(self, session_id: str, reason: str, now: float) -> None:
        """A guardrail said no: ``skipped`` with the reason; no credit is spent."""

    async def record_result(
        self, result: AnalysisResult, handlers: Sequence[str], now: float
    ) -> Finished | None:
        """Move an unfinished call to completed/failed with one pending delivery per handler in
        ``handlers`` (those subscribed to the result's event; ``delivered`` at once when there is
        none); None if it was already finished (nothing changes, nothing is delivered twice).
        No domain code runs here: ``when`` is evaluated at delivery time."""

    async def claim_calls_to_poll(
        self, limit: int, now: float, lease_seconds: float, owner: str
    ) -> list[CallRecord]:
        """Lease due ``processing``/``stale`` calls."""

    async def schedule_poll(self, session_id: str, next_at: float, stale: bool, now: float) -> None:
        """Release the lease and poll again at ``next_at`` (``stale`` moves processing -> stale)."""

    async def claim_deliveries(
        self, handler: str, limit: int, now: float, lease_seconds: float, owner: str
    ) -> list[DeliveryJob]:
        """Lease due pending deliveries of one handler (oldest first)."""

    async def mark_delivered(self, delivery_id: str, now: float) -> None:
        """Delivered; when every delivery of the call is done (``lifecycle.DONE``: delivered or
        filtered) the call becomes ``delivered``."""

    async def mark_filtered(self, delivery_id: str, now: float) -> None:
        """Its handler's ``when`` did not match: ``filtered`` (no attempt counted); the call becomes
        ``delivered`` as in ``mark_delivered``."""

    async def retry_delivery(self, delivery_id: str, next_at: float, error: str, now: float) -> None: ...

    async def dead_letter(self, delivery_id: str, error: str, now: float) -> None: ...

    async def release_delivery(self, delivery_id: str, next_at: float) -> None:
        """Give back a claimed delivery without counting an attempt (circuit open, shutdown)."""

    async def get_call(self, session_id: str) -> tuple[CallRecord, list[DeliveryRecord]] | None: ...

    async def list_dead_letters(
        self, handler: str | None, session_id: str | None, since: float | None, limit: int
    ) -> list[DeliveryRecord]: ...

    async def replay_dead_letters(
        self, handler: str | None, session_id: str | None, since: float | None, now: float
    ) -> int:
        """Make matching dead letters pending again (due now, attempts reset); return how many."""

    async def stats(self, now: float) -> Stats: ...

    async def prune(self, events_before: float, calls_before: float, batch: int) -> tuple[int, int]:
        """Delete inbound event ids received before ``events_before`` and finished calls (with their
        deliveries) last updated before ``calls_before``; at most ``batch`` rows of each per call.
        A call with an undelivered result (a pending, dead or orphaned delivery) is never deleted."""

    # --- operators (receiver.store.query / receiver.store.operations) ---------------------------

    async def list_calls(
        self, query: CallQuery
    ) -> tuple[list[tuple[CallRecord, list[DeliveryRecord]]], bool]:
        """One page of calls matching ``query``, newest first, with their deliveries; and whether
        another page follows (its cursor is the last call's ``(received_at, session_id)``)."""

    async def replay(self, request: ReplayRequest, now: float) -> ReplayOutcome:
        """Re-queue settled deliveries of finished calls (or create missing ones for named
        handlers); never starts an analysis. Recorded (dry runs too) in the replay log."""

    async def list_replays(self, limit: int) -> list[ReplayRecord]: ...

    async def pause_handler(self, handler: str, who: str, now: float) -> None:
        """No process delivers for ``handler`` until it is resumed; its work stays queued."""

    async def resume_handler(self, handler: str) -> bool: ...

    async def paused_handlers(self) -> dict[str, tuple[str, float]]: ...

    async def record_attempt(self, attempt: Attempt) -> None:
        """Keep a start or delivery attempt in the call's history (removed with the call)."""

    async def list_attempts(self, session_id: str) -> list[Attempt]: ...

    async def pending_by_handler(self) -> dict[str, tuple[int, float]]:
        """Handler -> (pending deliveries, oldest ``created_at``)."""

    async def replicas_alive(self, replica_id: str, now: float, ttl: float) -> int:
        """Record that ``replica_id`` is alive at ``now``, forget replicas not seen for ``ttl``
        seconds, and return how many are alive, this one included."""

    async def replica_gone(self, replica_id: str) -> None:
        """Forget ``replica_id`` at once (a clean shutdown)."""

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(kind)`` (``start``, ``poll`` or ``deliver``) when ANOTHER process created
        work (PostgreSQL LISTEN/NOTIFY). Single-process backends never call it."""


def open_store(url: str, **options: Any) -> Store:
    """The backend for ``url``'s scheme, imported only when used."""
    if url.startswith("sqlite:///"):
        from receiver.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"), **options)
    if url.startswith(("postgresql://", "postgres://")):
        from receiver.store.postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]

        store: Store = PostgresStore(url, **options)
        return store
    raise StoreError("RECEIVER_DATABASE_URL must start with sqlite:/// or postgresql://")
