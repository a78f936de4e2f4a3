"""What the use cases share: analysis settings, wake-ups, the attempt history, recording a finished
analysis, and the cached Kallglot session look-up."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from receiver.fanout import Subscription, event, subscribers
from receiver.kallglot import KallglotClient, KallglotError
from receiver.kallglot_answers import Analysis, SessionInfo
from receiver.lifecycle import CallState
from receiver.metrics import Metrics
from receiver.store import AnalysisResult, Finished, Store, StoreError
from receiver.store.operations import Attempt

log = logging.getLogger("receiver")

KALLGLOT = "kallglot"
TELEPHONY = "telephony"

#: Told (session id, carrier call ids) of every Kallglot event and session look-up (telephony mapping).
SessionObserver = Callable[[str | None, tuple[str, ...]], Awaitable[None]]


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


class Attempts:
    """The attempt history of each call (operators); losing an entry never breaks the work."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    async def record(
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
        status = getattr(error, "status", None)
        attempt = Attempt(
            session_id=session_id,
            at=self._clock(),
            kind=kind,
            outcome=outcome,
            handler=handler,
            code=status if isinstance(status, int) else None,
            reason=reason or getattr(error, "reason", None),
            next_at=next_at,
            request_id=request_id or getattr(error, "request_id", None),
        )
        try:
            await self._store.record_attempt(attempt)
        except StoreError as exc:
            log.warning("attempt.not_recorded", extra={"session_id": session_id, "error": str(exc)})


class Results:
    """Records a finished analysis (whoever learnt of it) and wakes the deliverer."""

    def __init__(
        self,
        store: Store,
        subscriptions: Sequence[Subscription],
        metrics: Metrics,
        wakeups: Wakeups,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.subscriptions = list(subscriptions)
        self._metrics = metrics
        self._wakeups = wakeups
        self._clock = clock

    def subscribers(self, result: AnalysisResult) -> list[str]:
        """The handlers that get a delivery of ``result`` (``when`` is for the delivering use case)."""
        return subscribers(self.subscriptions, result.state)

    async def record(self, result: AnalysisResult) -> None:
        now = self._clock()
        finished = await self.store.record_result(result, self.subscribers(result), now)
        if finished is not None:
            self.finished(result, finished, now)

    def finished(self, result: AnalysisResult, finished: Finished, now: float) -> None:
        status = event(result.state)
        self._metrics.analyses_finished.labels(status, finished.via).inc()
        if finished.started_at is not None:
            self._metrics.analysis_duration.observe(max(0.0, now - finished.started_at))
        log.info(
            f"analysis.{status}",
            extra={"session_id": finished.session_id, "analysis_id": result.analysis_id, "via": finished.via},
        )
        if finished.deliveries:
            self._wakeups("deliver")


class Sessions:
    """``GET /sessions/{id}``, cached per call, told to the session observers (telephony)."""

    def __init__(self, kallglot: KallglotClient) -> None:
        self._kallglot = kallglot
        self._cache: OrderedDict[str, SessionInfo] = OrderedDict()
        self.observers: list[SessionObserver] = []

    async def seen(self, session_id: str | None, carrier_call_ids: tuple[str, ...]) -> None:
        """Tell the observers which carrier calls ``session_id`` is."""
        for observe in self.observers:
            await observe(session_id, carrier_call_ids)

    async def info(self, session_id: str) -> SessionInfo | None:
        """The session, or None when Kallglot cannot tell us."""
        cached = self._cache.get(session_id)
        if cached is not None:
            return cached
        try:
            session = await self._kallglot.get_session(session_id)
        except KallglotError as exc:
            log.info("session.lookup_failed", extra={"session_id": session_id, "reason": exc.reason})
            return None
        self._cache[session_id] = session
        await self.seen(session_id, session.carrier_call_ids)
        while len(self._cache) > 1024:
            self._cache.popitem(last=False)
        return session


def result(
    session_id: str | None, analysis_id: str | None, analysis: Analysis, via: str
) -> AnalysisResult | None:
    """The finished analysis to record, None while Kallglot is still working."""
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


def failure(session_id: str, analysis_id: str | None, reason: str) -> AnalysisResult:
    """A call that failed on our side of Kallglot (start refused, analysis gone)."""
    analysis = {
        "object": "analysis",
        "id": analysis_id,
        "session_id": session_id,
        "status": "failed",
        "error": reason,
    }
    return AnalysisResult(session_id, analysis_id, CallState.FAILED, analysis, "start", reason)
