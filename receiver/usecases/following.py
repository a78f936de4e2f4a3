"""Following: poll the analyses that are overdue (or whose webhook only named them) until they finish."""

from __future__ import annotations

import logging
from collections.abc import Callable

from receiver.kallglot import KallglotClient, KallglotError, NotFound
from receiver.lifecycle import CallState
from receiver.pacing import backoff
from receiver.store import CallRecord, Store
from receiver.tracing import stage
from receiver.usecases.common import AnalysisSettings, Attempts, Results, failure, result

log = logging.getLogger("receiver")

STALE_POLL_SECONDS = 900.0
MAX_POLL_SECONDS = 300.0


class Following:
    def __init__(
        self,
        *,
        store: Store,
        kallglot: KallglotClient,
        results: Results,
        attempts: Attempts,
        settings: AnalysisSettings,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.kallglot = kallglot
        self.results = results
        self.attempts = attempts
        self.settings = settings
        self.clock = clock

    async def due(self, free: int, lease: float, owner: str) -> list[CallRecord]:
        """Claim the calls whose analysis is due for a poll."""
        if free <= 0:
            return []
        return await self.store.claim_calls_to_poll(free, self.clock(), lease, owner)

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
            await self.attempts.record(sid, "poll", "failed", exc)
            await self.results.record(failure(sid, call.analysis_id, exc.reason))
            return
        except KallglotError as exc:
            delay = exc.retry_after or backoff(call.polls, initial=5.0, maximum=MAX_POLL_SECONDS)
            await self.store.schedule_poll(sid, now + delay, False, self.clock())
            log.warning("analysis.poll_failed", extra={"session_id": sid, "reason": exc.reason})
            return
        finished = result(sid, call.analysis_id, analysis, "poll")
        if finished is not None:
            # The poll (or webhook-requested fetch) that finished the call, with Kallglot's request id.
            outcome = "completed" if finished.state is CallState.COMPLETED else "failed"
            await self.attempts.record(
                sid, "poll", outcome, None, reason=finished.reason, request_id=analysis.request_id
            )
            await self.results.record(finished)
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
