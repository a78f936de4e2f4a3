"""The telephony use cases: accept a verified carrier event, and match waiting ones to sessions.

A carrier event names its Kallglot session in the callback URL or the carrier's custom data; when it
does not, the store keeps it unmatched until Kallglot's own session data (``provider.call_sid`` /
``call_control_id`` in a webhook or in ``GET /v1/sessions/{id}``) maps the carrier call to a session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from prometheus_client import Gauge

from receiver.events import SESSION_ID
from receiver.metrics import Metrics
from receiver.store import Store
from receiver.store.carrier_port import Applied, CarrierEvent, CarrierOutcome, CarrierPlan
from receiver.store.keys import analysis_key
from receiver.usecases import AnalysisSettings, Sessions, Wakeups

log = logging.getLogger("receiver")

#: While another leg of the session is still live, an ended leg waits at most this long for it.
LEG_HOLD_SECONDS = 6 * 3600.0
PRUNE_EVERY = 600.0


@dataclass(frozen=True)
class TelephonyConfig:
    twilio_token: str | None
    telnyx_key: Ed25519PublicKey | None
    public_url: str | None
    end_session: dict[str, bool]
    settle_seconds: float
    tolerance_seconds: float
    retention_seconds: float = 30 * 86400.0


class Telephony:
    def __init__(
        self,
        config: TelephonyConfig,
        *,
        store: Store,
        settings: AnalysisSettings,
        sessions: Sessions,
        wakeups: Wakeups,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.store = store
        self.settings = settings
        self.wakeups = wakeups
        self.metrics = metrics
        self.clock = clock
        self.unmatched = Gauge(
            "receiver_carrier_events_unmatched",
            "Carrier events kept until their call maps to a Kallglot session",
            registry=metrics.registry,
        )
        sessions.observers.append(self.session_seen)
        self._next_prune = 0.0

    @property
    def plan(self) -> CarrierPlan:
        settings = self.settings
        return CarrierPlan(
            analysis_key=lambda session_id: analysis_key(session_id, settings.profile, settings.include),
            end_session=self.config.end_session,
            settle_seconds=self.config.settle_seconds,
            hold_seconds=max(LEG_HOLD_SECONDS, self.config.settle_seconds),
            profile=settings.profile,
            include=settings.include,
        )

    async def accept(self, event: CarrierEvent) -> Applied:
        applied = await self.store.accept_carrier_event(event, self.plan, self.clock())
        self._after(event.source, event.carrier_call_id, applied)
        if applied.outcome is CarrierOutcome.UNMATCHED:
            await self.refresh_unmatched()
        await self._maybe_prune()
        return applied

    async def _maybe_prune(self) -> None:
        """One bounded batch every PRUNE_EVERY seconds, so carrier rows stay bounded like the calls."""
        now = self.clock()
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY
        gone = await self.store.prune_carrier_events(now - self.config.retention_seconds, 500)
        if gone:
            log.info("carrier.pruned", extra={"rows": gone})

    async def session_seen(self, session_id: str | None, call_ids: tuple[str, ...]) -> None:
        """Kallglot told us about a session: map the carrier calls it names, apply what waited."""
        if session_id is None or not SESSION_ID.match(session_id):
            return
        matched = False
        for call_id in call_ids:
            for applied in await self.store.map_carrier_call(call_id, session_id, self.plan, self.clock()):
                matched = True
                self._after("kallglot", call_id, applied)
        if matched:
            await self.refresh_unmatched()

    async def refresh_unmatched(self) -> None:
        self.unmatched.set(await self.store.count_unmatched_carrier_events())

    def _after(self, source: str, call_id: str, applied: Applied) -> None:
        if applied.outcome in (CarrierOutcome.ACCEPTED, CarrierOutcome.MERGED):
            self.wakeups("start")
        if applied.outcome is CarrierOutcome.SKIPPED:
            self.metrics.analyses_skipped.labels("carrier_status").inc()
        if applied.outcome is not CarrierOutcome.DUPLICATE:
            log.info(
                f"carrier.{applied.outcome.value}",
                extra={"source": source, "session_id": applied.session_id, "carrier_call_id": call_id},
            )
