"""Use cases: accept an event, start an analysis, follow it, deliver the result.

The service holds no state of its own beyond caches and the start gate: everything that matters is
in the store, so a crash at any line loses nothing and a retry repeats nothing that cost money.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sentry_sdk

from receiver.delivery import (
    Delivery,
    DeliveryError,
    Handler,
    HandlerOptions,
    PermanentDeliveryError,
)
from receiver.events import ANALYSIS_TYPES, SESSION_END_TYPES, CallEnded, KallglotEvent
from receiver.gate import StartGate
from receiver.kallglot import (
    KallglotClient,
    KallglotError,
    NotFound,
    RateLimited,
    Rejected,
    StartingPaused,
)
from receiver.kallglot_answers import Analysis, SessionInfo, carrier_call_ids
from receiver.lifecycle import CallState
from receiver.metrics import Metrics
from receiver.pacing import backoff
from receiver.routing import Router, document, narrow
from receiver.store import (
    Accepted,
    AnalysisResult,
    CallRecord,
    DeliveryJob,
    Finished,
    NewCall,
    Store,
    StoreError,
)
from receiver.store.keys import analysis_key, end_session_key
from receiver.store.operations import Attempt
from receiver.tracing import stage

log = logging.getLogger("receiver")

KALLGLOT = "kallglot"
TELEPHONY = "telephony"
STALE_POLL_SECONDS = 900.0
MAX_POLL_SECONDS = 300.0
#: No wait before retrying a start is longer than this, whatever Kallglot asks (``retry_after``):
#: Kallglot keeps Idempotency-Keys about 24 h, and a start retried after that would spend a second
#: credit if the first POST was accepted but its answer lost.
MAX_START_WAIT_SECONDS = 3600.0


@dataclass(frozen=True)
class AnalysisSettings:
    profile: str
    include: tuple[str, ...]
    trigger: str
    poll_after_seconds: float
    deadline_seconds: float
    credit_reserve: int
    min_duration_seconds: float


class Wakeups:
    """In-process signals that new work exists, one per worker kind."""

    def __init__(self) -> None:
        self.events = {kind: asyncio.Event() for kind in ("start", "poll", "deliver")}

    def __call__(self, kind: str) -> None:
        event = self.events.get(kind)
        if event is not None:
            event.set()


class Service:
    def __init__(
        self,
        *,
        store: Store,
        kallglot: KallglotClient,
        metrics: Metrics,
        analysis: AnalysisSettings,
        handlers: dict[str, tuple[HandlerOptions, Handler]],
        router: Router,
        clock: Callable[[], float] = time.time,
        pause_seconds: tuple[float, float] = (15.0, 30.0),
    ) -> None:
        self.store = store
        self.kallglot = kallglot
        self.metrics = metrics
        self.settings = analysis
        self.handlers = handlers
        self.router = router
        self.clock = clock
        self.wakeups = Wakeups()
        self.gate = StartGate(clock, metrics, *pause_seconds)
        self._sessions: OrderedDict[str, SessionInfo] = OrderedDict()
        #: Told (session id, carrier call ids) of every Kallglot event and session lookup (telephony mapping).
        self.session_observers: list[Callable[[str | None, tuple[str, ...]], Awaitable[None]]] = []

    # --- inbound ----------------------------------------------------------------------------

    def _analysis_key(self, session_id: str) -> str:
        return analysis_key(session_id, self.settings.profile, self.settings.include)

    @stage("intake", lambda event: event.session_id)
    async def accept_kallglot(self, event: KallglotEvent) -> Accepted:
        hinted = event.session_id or event.data.get("session_id")
        for observe in self.session_observers:
            await observe(hinted if isinstance(hinted, str) else None, carrier_call_ids(event.data))
        now = self.clock()
        if event.type in SESSION_END_TYPES:
            if event.type != self.settings.trigger or event.session_id is None:
                return Accepted.IGNORED
            call: dict[str, Any] = {}
            if event.duration_seconds is not None:
                call["duration_seconds"] = event.duration_seconds
            outcome = await self.store.accept_call(
                KALLGLOT,
                event.id,
                event.type,
                self._new_call(event.session_id, call),
                now,
            )
            if outcome is Accepted.ACCEPTED:
                self.wakeups("start")
                log.info("call.received", extra={"session_id": event.session_id, "source": KALLGLOT})
            elif outcome is Accepted.DUPLICATE:
                await self._already_analysed(event.session_id, KALLGLOT)
            return outcome
        if event.type in ANALYSIS_TYPES:
            assert event.analysis_id is not None
            if event.analysis is None:
                outcome = await self.store.request_fetch(
                    KALLGLOT, event.id, event.type, event.session_id, event.analysis_id, now
                )
                if outcome is Accepted.ACCEPTED:
                    self.wakeups("poll")
                return outcome
            result = _result(event.session_id, event.analysis_id, event.analysis, "webhook")
            if result is None:
                return Accepted.IGNORED
            outcome, finished = await self.store.accept_analysis(
                KALLGLOT, event.id, event.type, result, self.router, now
            )
            if finished is not None:
                self._finished(result, finished, now)
            return outcome
        return Accepted.IGNORED

    @stage("intake", lambda webhook_id, event: event.session_id)
    async def accept_call_ended(self, webhook_id: str, event: CallEnded) -> Accepted:
        outcome = await self.store.accept_call(
            TELEPHONY,
            webhook_id,
            "call-ended",
            self._new_call(event.session_id, event.call_fields(), event.end_session),
            self.clock(),
        )
        if outcome is Accepted.ACCEPTED:
            self.wakeups("start")
            log.info("call.received", extra={"session_id": event.session_id, "source": TELEPHONY})
        elif outcome is Accepted.DUPLICATE:
            await self._already_analysed(event.session_id, TELEPHONY)
        return outcome

    def _new_call(self, session_id: str, call: dict[str, Any], end_session: bool = False) -> NewCall:
        """The call with the analysis settings of now, kept with it and sent on every attempt."""
        return NewCall(
            session_id,
            self._analysis_key(session_id),
            call,
            end_session,
            profile=self.settings.profile,
            include=tuple(self.settings.include),
        )

    async def _already_analysed(self, session_id: str, source: str) -> None:
        """A session announced again after its call row was pruned is recorded as a duplicate and
        never started again (no second credit); say so, since nothing else will happen to it."""
        remembered = await self.store.remembered_session(session_id)
        if remembered is not None and await self.store.get_call(session_id) is None:
            log.warning(
                "call.already_analysed",
                extra={"session_id": session_id, "source": source, "analysis_id": remembered.analysis_id},
            )

    def _finished(self, result: AnalysisResult, finished: Finished, now: float) -> None:
        status = "completed" if result.state is CallState.COMPLETED else "failed"
        self.metrics.analyses_finished.labels(status, finished.via).inc()
        if finished.started_at is not None:
            self.metrics.analysis_duration.observe(max(0.0, now - finished.started_at))
        log.info(
            f"analysis.{status}",
            extra={"session_id": finished.session_id, "analysis_id": result.analysis_id, "via": finished.via},
        )
        if finished.deliveries:
            self.wakeups("deliver")

    async def _finish(self, result: AnalysisResult) -> None:
        now = self.clock()
        finished = await self.store.finish(result, self.router, now)
        if finished is not None:
            self._finished(result, finished, now)

    # --- starting ---------------------------------------------------------------------------

    @stage("start", lambda call: call.session_id)
    async def start(self, call: CallRecord) -> None:
        """Start the call's analysis once; every failure leaves the call queued or finished with a reason."""
        now = self.clock()
        sid = call.session_id
        try:
            if await self._guardrails(call, now):
                return
            if call.end_session:
                await self.kallglot.end_session(sid, idempotency_key=end_session_key(call.analysis_key))
                await self.store.mark_session_ended(sid, self.clock())
            # Exactly the settings the Idempotency-Key was made from (kept with the call at acceptance).
            started = await self.kallglot.start_analysis(
                sid,
                profile=call.analysis_profile or self.settings.profile,
                include=call.analysis_include or self.settings.include,
                idempotency_key=call.analysis_key,
            )
        except RateLimited as exc:
            wait = min(exc.retry_after or 30.0, MAX_START_WAIT_SECONDS)
            await self.store.retry_call(sid, now + wait, exc.reason, self.clock())
            await self._attempt(sid, "start", "retry", exc, next_at=now + wait)
            log.warning("analysis.rate_limited", extra={"session_id": sid, "retry_after": wait})
            return
        except StartingPaused as exc:
            # The call stays due: the gate alone decides when starting resumes.
            self._pause(exc.reason, now, for_credits=exc.status == 402)
            await self.store.retry_call(sid, now, exc.reason, self.clock())
            await self._attempt(sid, "start", "paused", exc)
            return
        except (NotFound, Rejected) as exc:
            log.warning("analysis.rejected", extra={"session_id": sid, "reason": exc.reason})
            await self._attempt(sid, "start", "failed", exc)
            await self._finish(_failure(sid, None, exc.reason))
            return
        except KallglotError as exc:
            delay = min(
                exc.retry_after or backoff(call.attempts, initial=2.0, maximum=300.0), MAX_START_WAIT_SECONDS
            )
            await self.store.retry_call(sid, now + delay, exc.reason, self.clock())
            await self._attempt(sid, "start", "retry", exc, next_at=now + delay)
            log.warning("analysis.retry", extra={"session_id": sid, "reason": exc.reason, "retry_in": delay})
            return
        self.gate.resume()
        now = self.clock()
        await self.store.mark_started(sid, started.id, now + self.settings.poll_after_seconds, now)
        await self._attempt(
            sid, "start", "started", None, reason=f"analysis {started.id}", request_id=started.request_id
        )
        self.metrics.analyses_started.inc()
        log.info("analysis.started", extra={"session_id": sid, "analysis_id": started.id})
        result = _result(sid, started.id, started.analysis, "poll")
        if result is not None:  # Kallglot may answer with a finished analysis (idempotent replay)
            await self._finish(result)

    async def _attempt(
        self,
        session_id: str,
        kind: str,
        outcome: str,
        error: Exception | None,
        *,
        handler: str | None = None,
        next_at: float | None = None,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Keep the attempt in the call's history (operators); losing it never breaks the work."""
        status = getattr(error, "status", None)
        attempt = Attempt(
            session_id=session_id,
            at=self.clock(),
            kind=kind,
            outcome=outcome,
            handler=handler,
            code=status if isinstance(status, int) else None,
            reason=reason or getattr(error, "reason", None),
            next_at=next_at,
            request_id=request_id or getattr(error, "request_id", None),
        )
        try:
            await self.store.record_attempt(attempt)
        except StoreError as exc:
            log.warning("attempt.not_recorded", extra={"session_id": session_id, "error": str(exc)})

    async def _guardrails(self, call: CallRecord, now: float) -> bool:
        """True when the call must not be started now (skipped, or waiting for credits)."""
        minimum = self.settings.min_duration_seconds
        if minimum > 0:
            duration = call.call.get("duration_seconds")
            if duration is None:
                session = await self.session_info(call.session_id)
                duration = session.duration_seconds if session is not None else None
            if isinstance(duration, int | float) and duration < minimum:
                reason = f"call lasted {duration:g}s, below RECEIVER_MIN_DURATION_SECONDS={minimum:g}"
                await self.store.skip_call(call.session_id, reason, now)
                self.metrics.analyses_skipped.labels("min_duration").inc()
                log.info("analysis.skipped", extra={"session_id": call.session_id, "reason": reason})
                return True
        reserve = self.settings.credit_reserve
        if reserve > 0:
            if self.kallglot.credits_remaining is None or self.gate.reason is not None:
                # Any authenticated response carries the balance; a GET costs no credit.
                await self.kallglot.get_session(call.session_id)
            credits = self.kallglot.credits_remaining
            if credits is not None and credits <= reserve:
                reason = f"credits remaining {credits:g} <= RECEIVER_CREDIT_RESERVE={reserve}"
                self._pause(reason, now, for_credits=True)
                await self.store.retry_call(call.session_id, now, reason, now)
                return True
        return False

    def _pause(self, reason: str, now: float, *, for_credits: bool) -> None:
        self.gate.pause(reason, now, for_credits=for_credits)
        if for_credits:
            # Forget the balance seen before the refusal: only an answer after it may reopen the gate.
            self.kallglot.credits_remaining = None

    def observe_credits(self) -> bool:
        """Reopen a gate paused for credits when the last Kallglot answer (any: poll, session
        look-up) showed credits above the reserve; True if it did."""
        return self.gate.observe_credits(self.kallglot.credits_remaining, self.settings.credit_reserve)

    async def detect_orphans(self) -> dict[str, int]:
        """At start-up: deliveries of handlers no longer configured become ``orphaned`` (and come
        back to pending when their handler is configured again); one WARNING per handler."""
        orphaned = await self.store.orphan_deliveries(list(self.handlers), self.clock())
        for handler, count in sorted(orphaned.items()):
            log.warning(
                "delivery.orphaned",
                extra={
                    "handler": handler,
                    "count": count,
                    "hint": "handler not configured: discard or move them (admin API / CLI)",
                },
            )
        self.metrics.set_orphaned(orphaned)
        return orphaned

    async def session_info(self, session_id: str) -> SessionInfo | None:
        """``GET /sessions/{id}``, cached per call; None when Kallglot cannot tell us."""
        cached = self._sessions.get(session_id)
        if cached is not None:
            return cached
        try:
            session = await self.kallglot.get_session(session_id)
        except KallglotError as exc:
            log.info("session.lookup_failed", extra={"session_id": session_id, "reason": exc.reason})
            return None
        self._sessions[session_id] = session
        for observe in self.session_observers:
            await observe(session_id, session.carrier_call_ids)
        while len(self._sessions) > 1024:
            self._sessions.popitem(last=False)
        return session

    # --- following --------------------------------------------------------------------------

    @stage("follow", lambda call: call.session_id)
    async def poll(self, call: CallRecord) -> None:
        sid = call.session_id
        now = self.clock()
        if call.analysis_id is None:
            await self.store.schedule_poll(sid, now + self.settings.poll_after_seconds, False, now)
            return
        try:
            analysis = await self.kallglot.get_analysis(call.analysis_id)
        except NotFound as exc:
            await self._attempt(sid, "poll", "failed", exc)
            await self._finish(_failure(sid, call.analysis_id, exc.reason))
            return
        except KallglotError as exc:
            delay = exc.retry_after or backoff(call.polls, initial=5.0, maximum=MAX_POLL_SECONDS)
            await self.store.schedule_poll(sid, now + delay, False, self.clock())
            log.warning("analysis.poll_failed", extra={"session_id": sid, "reason": exc.reason})
            return
        result = _result(sid, call.analysis_id, analysis, "poll")
        if result is not None:
            # The poll (or webhook-requested fetch) that finished the call, with Kallglot's request id.
            outcome = "completed" if result.state is CallState.COMPLETED else "failed"
            request_id = getattr(analysis, "request_id", None)
            await self._attempt(sid, "poll", outcome, None, reason=result.reason, request_id=request_id)
            await self._finish(result)
            return
        started = call.started_at or call.received_at
        stale = now - started > self.settings.deadline_seconds
        if stale:
            delay = STALE_POLL_SECONDS
            if call.state is CallState.PROCESSING:
                log.warning("analysis.stale", extra={"session_id": sid, "analysis_id": call.analysis_id})
        else:
            delay = backoff(
                call.polls, initial=self.settings.poll_after_seconds / 2, maximum=MAX_POLL_SECONDS
            )
        await self.store.schedule_poll(sid, now + delay, stale, self.clock())

    # --- delivering -------------------------------------------------------------------------

    async def build_delivery(self, job: DeliveryJob, options: HandlerOptions) -> Delivery:
        record = job.delivery
        call = dict(job.call)
        if options.enrich and ("metadata" not in call or not (call.get("from") or call.get("to"))):
            session = await self.session_info(record.session_id)
            if session is not None and session.phone_number and "phone_number" not in call:
                call["phone_number"] = session.phone_number
            if session is not None and session.metadata is not None:
                call["metadata"] = {**session.metadata, **call.get("metadata", {})}
        doc = narrow(
            document(record.session_id, record.handler, record.status, call, job.analysis), options.fields
        )
        return Delivery(
            id=record.id,
            handler=record.handler,
            session_id=record.session_id,
            analysis_id=job.analysis_id,
            status="completed" if record.status == "completed" else "failed",
            attempt=record.attempts + 1,
            created_at=datetime.fromtimestamp(record.created_at, UTC),
            document=doc,
        )

    @stage("delivery", lambda job, timeout: job.delivery.session_id)
    async def deliver(self, job: DeliveryJob, timeout: float) -> DeliveryError | None:
        """One attempt; returns the classified error (None on success) after recording the outcome."""
        record = job.delivery
        options, handler = self.handlers[record.handler]
        started = time.perf_counter()
        error: DeliveryError | None = None
        try:
            delivery = await self.build_delivery(job, options)
            await asyncio.wait_for(handler.deliver(delivery), timeout=timeout)
        except DeliveryError as exc:
            error = exc
        except TimeoutError:
            error = DeliveryError(f"no answer within {timeout:g}s")
        except Exception as exc:
            sentry_sdk.capture_exception(exc)
            error = DeliveryError(f"unexpected {type(exc).__name__} in handler")
        self.metrics.delivery_duration.labels(record.handler).observe(time.perf_counter() - started)
        now = self.clock()
        if error is None:
            await self.store.mark_delivered(record.id, now)
            await self._attempt(record.session_id, "delivery", "delivered", None, handler=record.handler)
            self.metrics.deliveries.labels(record.handler, "delivered").inc()
            self.metrics.call_to_delivery.labels(record.handler).observe(max(0.0, now - job.call_received_at))
            log.info("delivery.delivered", extra={"session_id": record.session_id, "handler": record.handler})
            return None
        policy = options.retry
        attempts = record.attempts + 1
        first = record.first_attempt_at or now
        delay = error.retry_after or backoff(
            attempts, initial=policy.initial_seconds, maximum=policy.max_seconds, multiplier=policy.multiplier
        )
        exhausted = now + delay - first > policy.horizon_seconds or (
            policy.max_attempts is not None and attempts >= policy.max_attempts
        )
        if isinstance(error, PermanentDeliveryError) or exhausted:
            await self.store.dead_letter(record.id, error.reason, now)
            await self._attempt(record.session_id, "delivery", "dead", error, handler=record.handler)
            self.metrics.deliveries.labels(record.handler, "dead_lettered").inc()
            log.warning(
                "delivery.dead_lettered",
                extra={"session_id": record.session_id, "handler": record.handler, "reason": error.reason},
            )
        else:
            await self.store.retry_delivery(record.id, now + delay, error.reason, now)
            await self._attempt(
                record.session_id, "delivery", "retry", error, handler=record.handler, next_at=now + delay
            )
            self.metrics.deliveries.labels(record.handler, "retried").inc()
            log.warning(
                "delivery.retry",
                extra={
                    "session_id": record.session_id,
                    "handler": record.handler,
                    "reason": error.reason,
                    "retry_in": round(delay, 3),
                },
            )
        return error


def _result(
    session_id: str | None, analysis_id: str | None, analysis: Analysis, via: str
) -> AnalysisResult | None:
    state = analysis.state
    if state is None:
        return None
    return AnalysisResult(
        session_id=session_id,
        analysis_id=analysis_id,
        state=state,
        analysis=analysis.document,
        via=via,
        reason=analysis.error,
    )


def _failure(session_id: str, analysis_id: str | None, reason: str) -> AnalysisResult:
    analysis = {
        "object": "analysis",
        "id": analysis_id,
        "session_id": session_id,
        "status": "failed",
        "error": reason,
    }
    return AnalysisResult(session_id, analysis_id, CallState.FAILED, analysis, "start", reason)
