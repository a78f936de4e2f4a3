"""Delivering: claim a handler's due deliveries and hand each finished call to its handler once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sentry_sdk

from receiver.delivery import Delivery, DeliveryError, HandlerOptions, PermanentDeliveryError
from receiver.destination import Destination
from receiver.fanout import document, narrow
from receiver.metrics import Metrics
from receiver.pacing import backoff
from receiver.store import DeliveryJob, Store
from receiver.tracing import stage
from receiver.usecases.common import Attempts, Sessions

log = logging.getLogger("receiver")


WHEN_NO_MATCH = "its 'when' did not match"


@dataclass(frozen=True)
class Outcome:
    """One attempt as the delivery loop sees it: the handler's error (None on success), or the
    handler was not asked at all (``asked`` False: the delivery was filtered)."""

    error: DeliveryError | None = None
    asked: bool = True

    @property
    def handler_ok(self) -> bool:
        """The handler answered as a working one does (a permanent refusal is a working answer)."""
        return self.error is None or isinstance(self.error, PermanentDeliveryError)


FILTERED = Outcome(asked=False)


class Delivering:
    def __init__(
        self,
        *,
        store: Store,
        destinations: dict[str, Destination],
        attempts: Attempts,
        sessions: Sessions,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.destinations = destinations
        self.attempts = attempts
        self.sessions = sessions
        self.metrics = metrics
        self.clock = clock

    async def due(self, destination: Destination, free: int, lease: float, owner: str) -> list[DeliveryJob]:
        """Claim up to ``free`` deliveries of ``destination`` that are due."""
        return await self.store.claim_deliveries(destination.name, free, self.clock(), lease, owner)

    async def paused(self) -> dict[str, Any]:
        """Handlers paused by operators (stored, so every replica honours them)."""
        return dict(await self.store.paused_handlers())

    async def give_back(self, job: DeliveryJob) -> None:
        """An attempt cut short (shutdown): due again at once, for any replica."""
        await self.store.release_delivery(job.delivery.id, self.clock())

    async def detect_orphans(self) -> dict[str, int]:
        """At start-up: deliveries of handlers no longer configured become ``orphaned`` (and come
        back to pending when their handler is configured again); one WARNING per handler."""
        orphaned = await self.store.orphan_deliveries(list(self.destinations), self.clock())
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

    async def build_delivery(
        self, job: DeliveryJob, doc: dict[str, Any], options: HandlerOptions
    ) -> Delivery:
        """What the handler receives: ``doc`` with the call enriched (``enrich``), narrowed to ``fields``."""
        record = job.delivery
        call = doc["call"]
        if options.enrich and ("metadata" not in call or not (call.get("from") or call.get("to"))):
            call = dict(call)
            session = await self.sessions.info(record.session_id)
            if session is not None and session.phone_number and "phone_number" not in call:
                call["phone_number"] = session.phone_number
            if session is not None and session.metadata is not None:
                call["metadata"] = {**session.metadata, **call.get("metadata", {})}
            doc = {**doc, "call": call}
        return Delivery(
            id=record.id,
            handler=record.handler,
            session_id=record.session_id,
            analysis_id=job.analysis_id,
            status="completed" if record.status == "completed" else "failed",
            attempt=record.attempts + 1,
            created_at=datetime.fromtimestamp(record.created_at, UTC),
            document=narrow(doc, options.fields),
        )

    @stage("delivery", lambda destination, job, timeout: job.delivery.session_id)
    async def deliver(self, destination: Destination, job: DeliveryJob, timeout: float) -> Outcome:
        """One attempt: the document is built once; its ``when`` decides whether the handler is asked
        at all (``filtered`` if not, on the document before enrichment, so that a filtered delivery
        costs no Kallglot look-up); the outcome is recorded."""
        record = job.delivery
        doc = document(record.id, record.session_id, record.status, job.call, job.analysis)
        if not destination.subscription.matches(doc):
            await self._filtered(job)
            return FILTERED
        started = time.perf_counter()
        error: DeliveryError | None = None
        try:
            delivery = await self.build_delivery(job, doc, destination.options)
            await asyncio.wait_for(destination.handler.deliver(delivery), timeout=timeout)
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
            await self.attempts.record(
                record.session_id, "delivery", "delivered", None, handler=record.handler
            )
            self.metrics.deliveries.labels(record.handler, "delivered").inc()
            self.metrics.call_to_delivery.labels(record.handler).observe(max(0.0, now - job.call_received_at))
            log.info("delivery.delivered", extra={"session_id": record.session_id, "handler": record.handler})
            return Outcome()
        await self._failed(job, destination.options, error, now)
        return Outcome(error)

    async def _filtered(self, job: DeliveryJob) -> None:
        record = job.delivery
        await self.store.mark_filtered(record.id, self.clock())
        await self.attempts.record(
            record.session_id, "delivery", "filtered", None, handler=record.handler, reason=WHEN_NO_MATCH
        )
        log.info("delivery.filtered", extra={"session_id": record.session_id, "handler": record.handler})

    async def _failed(
        self, job: DeliveryJob, options: HandlerOptions, error: DeliveryError, now: float
    ) -> None:
        record = job.delivery
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
            await self.attempts.record(record.session_id, "delivery", "dead", error, handler=record.handler)
            self.metrics.deliveries.labels(record.handler, "dead_lettered").inc()
            log.warning(
                "delivery.dead_lettered",
                extra={"session_id": record.session_id, "handler": record.handler, "reason": error.reason},
            )
            return
        await self.store.retry_delivery(record.id, now + delay, error.reason, now)
        await self.attempts.record(
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
