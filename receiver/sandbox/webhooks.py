"""Signed webhook deliveries on Kallglot's retry schedule, from one timer heap with bounded concurrency.

The dispatcher owns a heap of due items (deliveries and plain timers such as "analysis finished")
and one loop that pops what is due and starts at most ``max_concurrency`` HTTP attempts at once,
all through one shared ``httpx.AsyncClient``. Pending work costs a heap entry, not a task.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import json
import logging
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..signing import sign_kallglot

log = logging.getLogger(__name__)

Clock = Callable[[], float]

RETRY_SCHEDULE = (0.0, 60.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 86400.0)
"""Delay before each of Kallglot's 8 attempts (about 41.5 h in all)."""
JITTER = 0.1


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process: building one costs tens of milliseconds."""
    return ssl.create_default_context()


@dataclass(slots=True)
class Delivery:
    """One delivery of one event to one URL; its id and body stay the same across attempts."""

    id: str
    url: str
    secret: str
    body: bytes
    original_timestamp: int
    attempt: int = 0
    then: Callable[[], None] | None = None
    """Run once the first attempt is over, whatever its outcome (orders dependent events)."""


@dataclass(order=True, slots=True)
class _Due:
    at: float
    seq: int
    item: Delivery | Callable[[], None] = field(compare=False)


class WebhookDispatcher:
    """Runs timers and delivers webhooks; ``start``/``aclose`` are idempotent."""

    def __init__(
        self,
        *,
        clock: Clock,
        rng: Callable[[], random.Random],
        retry_scale: Callable[[], float],
        timeout: Callable[[], float],
        max_concurrency: int = 64,
        max_wait: float = 0.5,
    ) -> None:
        self._clock = clock
        self._rng = rng
        self._retry_scale = retry_scale
        self._timeout = timeout
        self._max_concurrency = max_concurrency
        self._max_wait = max_wait
        self._heap: list[_Due] = []
        self._queued = 0
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._client: httpx.AsyncClient | None = None
        self._runner: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self.reset_counters()

    def reset_counters(self) -> None:
        self.sent = 0
        self.attempts = 0
        self.delivered = 0
        self.failed_attempts = 0
        self.given_up = 0

    # --- scheduling -------------------------------------------------------------------------

    def _push(self, at: float, item: Delivery | Callable[[], None]) -> None:
        if isinstance(item, Delivery):
            self._queued += 1
        heapq.heappush(self._heap, _Due(at, next(self._seq), item))
        self._wake.set()

    def call_at(self, at: float, action: Callable[[], None]) -> None:
        """Run ``action`` (synchronous, quick) once the clock reaches ``at``."""
        self._push(at, action)

    def deliver(self, delivery: Delivery, at: float | None = None) -> None:
        self._push(self._clock() if at is None else at, delivery)

    def wake(self) -> None:
        """Look at the clock again now (an injected clock may have jumped)."""
        self._wake.set()

    @property
    def pending(self) -> int:
        """Deliveries waiting for an attempt or in one."""
        return self._queued + len(self._inflight)

    def clear(self) -> None:
        """Forget everything scheduled (attempts already on the wire finish)."""
        self._heap.clear()
        self._queued = 0

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            return
        limits = httpx.Limits(max_connections=self._max_concurrency, max_keepalive_connections=16)
        self._client = httpx.AsyncClient(limits=limits, verify=_tls())
        self._wake = asyncio.Event()
        self._runner = asyncio.create_task(self._run(), name="sandbox-webhooks")

    async def aclose(self) -> None:
        """Stop now; attempts in flight are cancelled and pending deliveries are dropped."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        tasks = [runner, *self._inflight]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        dropped = self.pending
        self.clear()
        self._inflight.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if dropped:
            log.info("sandbox.webhooks_dropped", extra={"count": dropped})

    # --- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self._max_concurrency)
        loop = asyncio.get_running_loop()
        while True:
            now = self._clock()
            while self._heap and self._heap[0].at <= now:
                item = heapq.heappop(self._heap).item
                if isinstance(item, Delivery):
                    self._queued -= 1
                    await slots.acquire()
                    task = asyncio.create_task(self._attempt(item, slots))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                else:
                    try:
                        item()
                    except Exception:
                        log.exception("sandbox.timer_failed")
            self._wake.clear()
            wait = self._max_wait if not self._heap else min(self._max_wait, self._heap[0].at - now)
            # a timer handle rather than wait_for: no task per turn of the loop
            timer = loop.call_later(max(wait, 0.0), self._wake.set)
            await self._wake.wait()
            timer.cancel()

    async def _attempt(self, delivery: Delivery, slots: asyncio.Semaphore) -> None:
        try:
            ok = await self._post(delivery)
        finally:
            slots.release()
        then, delivery.then = delivery.then, None
        if then is not None:
            try:
                then()
            except Exception:
                log.exception("sandbox.timer_failed")
        if ok:
            self.delivered += 1
            return
        self.failed_attempts += 1
        delivery.attempt += 1
        if delivery.attempt >= len(RETRY_SCHEDULE):
            self.given_up += 1
            log.info("sandbox.webhook_given_up", extra={"delivery_id": delivery.id})
            return
        delay = RETRY_SCHEDULE[delivery.attempt] * self._retry_scale()
        delay *= 1 + self._rng().uniform(-JITTER, JITTER)
        self.deliver(delivery, self._clock() + delay)

    async def _post(self, delivery: Delivery) -> bool:
        assert self._client is not None
        if delivery.attempt == 0:
            self.sent += 1
        self.attempts += 1
        now = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Kallglot-Webhooks/1.0 (sandbox)",
            "Kallglot-Signature": sign_kallglot(delivery.secret, now, delivery.body),
            "Kallglot-Webhook-Id": delivery.id,
            "Kallglot-Retry-Count": str(delivery.attempt),
            "Kallglot-Original-Timestamp": str(delivery.original_timestamp),
        }
        try:
            response = await self._client.post(
                delivery.url, content=delivery.body, headers=headers, timeout=self._timeout()
            )
        except Exception as exc:  # any failure to get an answer is a failed attempt, as at Kallglot
            log.info("sandbox.webhook_error", extra={"delivery_id": delivery.id, "error": type(exc).__name__})
            return False
        return response.is_success


def encode_event(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()
