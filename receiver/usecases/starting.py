"""Starting: claim due calls and start each one's analysis once (one credit), behind the start gate."""

from __future__ import annotations

import logging
from collections.abc import Callable

from receiver.gate import Allowance, StartGate
from receiver.kallglot import (
    KallglotClient,
    KallglotError,
    NotFound,
    RateLimited,
    Rejected,
    StartingPaused,
)
from receiver.metrics import Metrics
from receiver.pacing import backoff
from receiver.store import CallRecord, Store
from receiver.store.keys import end_session_key
from receiver.tracing import stage
from receiver.usecases.common import AnalysisSettings, Attempts, Results, Sessions, failure, result

log = logging.getLogger("receiver")

#: No wait before retrying a start is longer than this, whatever Kallglot asks (``retry_after``):
#: Kallglot keeps Idempotency-Keys about 24 h, and a start retried after that would spend a second
#: credit if the first POST was accepted but its answer lost.
MAX_START_WAIT_SECONDS = 3600.0


class Starting:
    def __init__(
        self,
        *,
        store: Store,
        kallglot: KallglotClient,
        gate: StartGate,
        results: Results,
        attempts: Attempts,
        sessions: Sessions,
        metrics: Metrics,
        settings: AnalysisSettings,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.kallglot = kallglot
        self.gate = gate
        self.results = results
        self.attempts = attempts
        self.sessions = sessions
        self.metrics = metrics
        self.settings = settings
        self.clock = clock

    async def due(self, free: int, in_flight: int, lease: float, owner: str) -> list[CallRecord]:
        """Claim the calls to start now: none while the gate is shut or a 429 blocks starting, one
        at a time while the gate probes."""
        now = self.clock()
        limit = free
        self.observe_credits()  # any answer since the last look may reopen a credit pause
        allowance = self.gate.allowance(now)
        if allowance is Allowance.SHUT:
            return []
        if allowance is Allowance.PROBE:
            limit = min(limit, 1) if not in_flight else 0
        if limit <= 0 or self.kallglot.blocked_until() > now:
            return []
        return await self.store.claim_calls_to_start(limit, now, lease, owner)

    async def renew(self, session_id: str, lease: float, owner: str) -> bool:
        """Keep the claim on a call whose start is in hand; False once it moved on."""
        now = self.clock()
        return await self.store.renew_call_lease(session_id, owner, now + lease, now)

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
            await self.attempts.record(sid, "start", "retry", exc, next_at=now + wait)
            log.warning("analysis.rate_limited", extra={"session_id": sid, "retry_after": wait})
            return
        except StartingPaused as exc:
            # The call stays due: the gate alone decides when starting resumes.
            self._pause(exc.reason, now, for_credits=exc.status == 402)
            await self.store.retry_call(sid, now, exc.reason, self.clock())
            await self.attempts.record(sid, "start", "paused", exc)
            return
        except (NotFound, Rejected) as exc:
            log.warning("analysis.rejected", extra={"session_id": sid, "reason": exc.reason})
            await self.attempts.record(sid, "start", "failed", exc)
            await self.results.record(failure(sid, None, exc.reason))
            return
        except KallglotError as exc:
            delay = min(
                exc.retry_after or backoff(call.attempts, initial=2.0, maximum=300.0), MAX_START_WAIT_SECONDS
            )
            await self.store.retry_call(sid, now + delay, exc.reason, self.clock())
            await self.attempts.record(sid, "start", "retry", exc, next_at=now + delay)
            log.warning("analysis.retry", extra={"session_id": sid, "reason": exc.reason, "retry_in": delay})
            return
        self.gate.resume()
        now = self.clock()
        await self.store.mark_started(sid, started.id, now + self.settings.poll_after_seconds, now)
        await self.attempts.record(
            sid, "start", "started", None, reason=f"analysis {started.id}", request_id=started.request_id
        )
        self.metrics.analyses_started.inc()
        log.info("analysis.started", extra={"session_id": sid, "analysis_id": started.id})
        finished = result(sid, started.id, started.analysis, "poll")
        if finished is not None:  # Kallglot may answer with a finished analysis (idempotent replay)
            await self.results.record(finished)

    async def _guardrails(self, call: CallRecord, now: float) -> bool:
        """True when the call must not be started now (skipped, or waiting for credits)."""
        minimum = self.settings.min_duration_seconds
        if minimum > 0:
            duration = call.fields.get("duration_seconds")
            if duration is None:
                session = await self.sessions.info(call.session_id)
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
