"""Intake: accept a verified event (a Kallglot webhook or a telephony call-ended) into the store."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from receiver.events import ANALYSIS_TYPES, SESSION_END_TYPES, CallEnded, KallglotEvent
from receiver.kallglot_answers import carrier_call_ids
from receiver.store import EventOutcome, NewCall, Store
from receiver.store.keys import analysis_key
from receiver.tracing import stage
from receiver.usecases.common import (
    KALLGLOT,
    TELEPHONY,
    AnalysisSettings,
    Results,
    Sessions,
    Wakeups,
    result,
)

log = logging.getLogger("receiver")


class Intake:
    def __init__(
        self,
        *,
        store: Store,
        results: Results,
        sessions: Sessions,
        settings: AnalysisSettings,
        wakeups: Wakeups,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.results = results
        self.sessions = sessions
        self.settings = settings
        self.wakeups = wakeups
        self.clock = clock

    @stage("intake", lambda event: event.session_id)
    async def accept_kallglot(self, event: KallglotEvent) -> EventOutcome:
        call_ids = carrier_call_ids(event.data)
        if call_ids:  # the event names carrier calls: telephony may map them to the session
            hinted = event.session_id or event.data.get("session_id")
            await self.sessions.seen(hinted if isinstance(hinted, str) else None, call_ids)
        now = self.clock()
        if event.type in SESSION_END_TYPES:
            if event.type != self.settings.trigger or event.session_id is None:
                return EventOutcome.IGNORED
            call: dict[str, Any] = {}
            if event.duration_seconds is not None:
                call["duration_seconds"] = event.duration_seconds
            outcome = await self.store.accept_call(
                KALLGLOT, event.id, event.type, self.new_call(event.session_id, call), now
            )
            if outcome is EventOutcome.ACCEPTED:
                self.wakeups("start")
                log.info("call.received", extra={"session_id": event.session_id, "source": KALLGLOT})
            elif outcome is EventOutcome.DUPLICATE:
                await self._already_analysed(event.session_id, KALLGLOT)
            return outcome
        if event.type in ANALYSIS_TYPES:
            assert event.analysis_id is not None
            if event.analysis is None:
                outcome = await self.store.request_fetch(
                    KALLGLOT, event.id, event.type, event.session_id, event.analysis_id, now
                )
                if outcome is EventOutcome.ACCEPTED:
                    self.wakeups("poll")
                return outcome
            finished_result = result(event.session_id, event.analysis_id, event.analysis, "webhook")
            if finished_result is None:
                return EventOutcome.IGNORED
            outcome, finished = await self.store.accept_analysis(
                KALLGLOT,
                event.id,
                event.type,
                finished_result,
                self.results.subscribers(finished_result),
                now,
            )
            if finished is not None:
                self.results.finished(finished_result, finished, now)
            return outcome
        return EventOutcome.IGNORED

    @stage("intake", lambda webhook_id, event: event.session_id)
    async def accept_call_ended(self, webhook_id: str, event: CallEnded) -> EventOutcome:
        outcome = await self.store.accept_call(
            TELEPHONY,
            webhook_id,
            "call-ended",
            self.new_call(event.session_id, event.call_fields(), event.end_session),
            self.clock(),
        )
        if outcome is EventOutcome.ACCEPTED:
            self.wakeups("start")
            log.info("call.received", extra={"session_id": event.session_id, "source": TELEPHONY})
        elif outcome is EventOutcome.DUPLICATE:
            await self._already_analysed(event.session_id, TELEPHONY)
        return outcome

    def analysis_key(self, session_id: str) -> str:
        return analysis_key(session_id, self.settings.profile, self.settings.include)

    def new_call(self, session_id: str, call: dict[str, Any], end_session: bool = False) -> NewCall:
        """The call with the analysis settings of now, kept with it and sent on every attempt."""
        return NewCall(
            session_id,
            self.analysis_key(session_id),
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
