"""Background loops: start analyses, poll overdue ones, deliver the outbox, keep gauges and prune,
and count the replicas.

Each loop has ``run_once()`` (ask its use case for due work, launch it within its concurrency) and ``run(stop)``;
it sleeps until its wake-up event fires or a tick passes. Work is claimed with a lease, so a killed
process leaves nothing stuck: serve releases a dead SQLite process's leases at start (see
``receiver.store.locks``), PostgreSQL lets them expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import sentry_sdk

from receiver.destination import Destination
from receiver.metrics import Metrics
from receiver.observability import report_outage
from receiver.store import CallRecord, DeliveryJob, Store, StoreError
from receiver.usecases import Delivering, Following, Starting, Wakeups

log = logging.getLogger("receiver")

OWNER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
#: Short, because it is renewed while the start is in hand (a dead replica's calls are taken over soon).
START_LEASE = 30.0
POLL_LEASE = 60.0
#: Every replica says it is alive this often, and counts the others as it does: a replica that
#: comes or goes changes everybody's share of the Kallglot rate limit within this time.
REPLICA_BEAT = 2.0
#: A replica not heard of for this long is no longer counted (seven missed beats: counting a dead
#: one a while only leaves budget unused, missing a live one risks 429s).
REPLICA_TTL = 15.0


class Loop:
    """Claims due work and runs it in tasks it owns, at most ``concurrency`` at a time."""

    name = "loop"

    def __init__(self, wakeup: asyncio.Event, *, tick: float = 1.0, concurrency: int = 8) -> None:
        self.wakeup = wakeup
        self.tick = tick
        self.concurrency = concurrency
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def free(self) -> int:
        return self.concurrency - len(self.tasks)

    def launch(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._guard(coro))
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.wakeup.set()  # a slot is free: look for more work

    async def _guard(self, coro: Awaitable[None]) -> None:
        try:
            await coro
        except StoreError as exc:
            log.warning(f"{self.name}.store_error", extra={"error": str(exc)})
        except Exception as exc:
            sentry_sdk.capture_exception(exc)
            log.exception(f"{self.name}.crashed")

    async def run_once(self) -> int:
        """Claim and launch due work; return how many items were launched."""
        raise NotImplementedError

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            self.wakeup.clear()
            try:
                launched = await self.run_once()
                failures = 0
            except StoreError as exc:
                failures += 1
                launched = 0
                log.warning(f"{self.name}.store_unavailable", extra={"error": str(exc)})
            except Exception as exc:
                failures += 1
                launched = 0
                sentry_sdk.capture_exception(exc)
                log.exception(f"{self.name}.crashed")
            if launched and self.free > 0 and not failures:
                continue
            timeout = self.tick if not failures else min(30.0, self.tick * 2**failures)
            await _wait_any(stop, self.wakeup, timeout, ignore_wakeup=bool(failures))

    async def drain(self, timeout: float) -> int:
        """Wait for in-flight work up to ``timeout``; cancel the rest and return how many were cancelled."""
        if not self.tasks:
            return 0
        _, pending = await asyncio.wait(set(self.tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        return len(pending)


async def _wait_any(
    stop: asyncio.Event, wakeup: asyncio.Event, timeout: float, *, ignore_wakeup: bool
) -> None:
    waiters = [asyncio.ensure_future(stop.wait())]
    if not ignore_wakeup:
        waiters.append(asyncio.ensure_future(wakeup.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class Starter(Loop):
    name = "starter"

    def __init__(
        self, starting: Starting, wakeups: Wakeups, *, lease: float = START_LEASE, **kwargs: Any
    ) -> None:
        super().__init__(wakeups.events["start"], **kwargs)
        self.starting = starting
        self.lease = lease

    async def run_once(self) -> int:
        calls = await self.starting.due(self.free, len(self.tasks), self.lease, OWNER)
        for call in calls:
            self.launch(self._start(call))
        return len(calls)

    async def _start(self, call: CallRecord) -> None:
        """Start the call while renewing its lease: a task waiting for the rate limiter or a slow
        answer keeps the call, so another replica never claims it meanwhile."""
        renewer = asyncio.create_task(self._renew(call.session_id))
        try:
            await self.starting.start(call)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _renew(self, session_id: str) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                kept = await self.starting.renew(session_id, self.lease, OWNER)
            except StoreError as exc:
                log.warning(
                    "starter.lease_renewal_failed", extra={"session_id": session_id, "error": str(exc)}
                )
                continue
            if not kept:
                return  # the call moved on (or the lease is someone else's): nothing left to keep


class Poller(Loop):
    name = "poller"

    def __init__(self, following: Following, wakeups: Wakeups, **kwargs: Any) -> None:
        super().__init__(wakeups.events["poll"], **kwargs)
        self.following = following

    async def run_once(self) -> int:
        calls = await self.following.due(self.free, POLL_LEASE, OWNER)
        for call in calls:
            self.launch(self.following.poll(call))
        return len(calls)


class Deliverer(Loop):
    """One loop for every handler: per-handler concurrency, rate limit and circuit breaker."""

    name = "deliverer"

    def __init__(
        self, delivering: Delivering, wakeups: Wakeups, *, handler_timeout: float = 60.0, **kwargs: Any
    ) -> None:
        super().__init__(wakeups.events["deliver"], **kwargs)
        self.delivering = delivering
        self.handler_timeout = handler_timeout
        destinations = delivering.destinations.values()
        self.concurrency = sum(destination.options.concurrency for destination in destinations) or 1
        self._paused_cache: dict[str, Any] = {}
        self._paused_read = float("-inf")
        self._paused_generation = 0

    def _circuit_changed(self, handler: str, is_open: bool) -> None:
        self.delivering.metrics.circuit_open.labels(handler).set(1 if is_open else 0)
        if is_open:
            log.warning("handler.circuit_open", extra={"handler": handler})
            report_outage(f"handler {handler}", "circuit opened after repeated delivery failures")
        else:
            log.info("handler.circuit_closed", extra={"handler": handler})

    async def run_once(self) -> int:
        launched = 0
        paused = await self._paused()
        for destination in self.delivering.destinations.values():
            if destination.name in paused:
                continue
            now = self.delivering.clock()
            free = destination.allowance(now)
            if free <= 0:
                continue
            lease = self.handler_timeout + 30.0
            jobs = await self.delivering.due(destination, free, lease, OWNER)
            if not jobs:
                destination.circuit.no_probe()
            for job, delay in zip(jobs, destination.pace(now, len(jobs)), strict=True):
                destination.in_flight += 1
                self.launch(self._one(destination, job, delay))
            launched += len(jobs)
        return launched

    async def _paused(self) -> dict[str, Any]:
        """Handlers paused by operators (stored, so every replica honours them); read at most once a
        second, since run_once runs on every wake-up."""
        now = time.monotonic()
        if now - self._paused_read >= 1.0:
            while True:  # a pause made here while we read must not be hidden by what we read
                generation = self._paused_generation
                paused = await self.delivering.paused()
                if generation == self._paused_generation:
                    break
            self._paused_cache, self._paused_read = paused, now
        return self._paused_cache

    def forget_pauses(self) -> None:
        """An operator paused or resumed a handler in this process: read the pauses again now."""
        self._paused_read = float("-inf")
        self._paused_generation += 1

    async def _one(self, destination: Destination, job: DeliveryJob, delay: float) -> None:
        try:
            if delay:
                await asyncio.sleep(delay)
            outcome = await self.delivering.deliver(destination, job, self.handler_timeout)
            if outcome.asked:
                destination.circuit.record(outcome.handler_ok, self.delivering.clock(), self._circuit_changed)
            else:  # filtered: the handler's health is still unknown
                destination.circuit.no_probe()
        except asyncio.CancelledError:
            # Shutdown cut the attempt short: give the delivery back now rather than leaving its
            # lease to expire, so another replica (or the next start) takes it at once.
            with contextlib.suppress(StoreError):
                await asyncio.shield(self.delivering.give_back(job))
            raise
        finally:
            destination.in_flight -= 1

    @property
    def free(self) -> int:
        return max(0, self.concurrency - len(self.tasks))


class Maintenance(Loop):
    """Refreshes the gauges from the store and prunes old rows, away from the request path."""

    name = "maintenance"

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        handlers: Sequence[str],
        clock: Callable[[], float],
        *,
        event_retention: float,
        call_retention: float,
        prune_every: float = 600.0,
        session_memory: float | None = None,
    ) -> None:
        super().__init__(asyncio.Event(), tick=5.0, concurrency=1)
        self.store = store
        self.metrics = metrics
        self.handlers = handlers
        self.clock = clock
        #: Sessions already analysed are remembered this long (never less than the call rows).
        self.session_memory = max(call_retention, session_memory or 90 * 86400.0)
        self.event_retention = event_retention
        self.call_retention = call_retention
        self.prune_every = prune_every
        self._last_prune = 0.0

    async def run_once(self) -> int:
        now = self.clock()
        stats = await self.store.stats(now)
        self.metrics.apply_stats(stats, self.handlers)
        self.metrics.store_up.set(1)
        if now - self._last_prune >= self.prune_every:
            self._last_prune = now
            total = (0, 0)
            while True:
                events, calls = await self.store.prune(
                    now - self.event_retention, now - self.call_retention, 500
                )
                total = (total[0] + events, total[1] + calls)
                if events < 500 and calls < 500:
                    break
                await asyncio.sleep(0)  # let requests through between batches
            forgotten = 0
            while True:
                count = await self.store.forget_sessions(now - self.session_memory, 500)
                forgotten += count
                if count < 500:
                    break
                await asyncio.sleep(0)
            if any(total) or forgotten:
                log.info(
                    "store.pruned",
                    extra={"event_ids": total[0], "calls": total[1], "sessions_forgotten": forgotten},
                )
        return 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except StoreError as exc:
                self.metrics.store_up.set(0)
                log.warning("maintenance.store_unavailable", extra={"error": str(exc)})
            except Exception as exc:
                sentry_sdk.capture_exception(exc)
                log.exception("maintenance.crashed")
            await _wait_any(stop, self.wakeup, self.tick, ignore_wakeup=True)


class Heartbeat(Loop):
    """Says every ``REPLICA_BEAT`` seconds that this serve is alive, and counts the serves alive on
    the same store: they share the organisation's Kallglot rate limit (``on_replicas``)."""

    name = "heartbeat"

    def __init__(
        self, store: Store, metrics: Metrics, clock: Callable[[], float], on_replicas: Callable[[int], None]
    ) -> None:
        super().__init__(asyncio.Event(), tick=REPLICA_BEAT, concurrency=1)
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.on_replicas = on_replicas

    async def run_once(self) -> int:
        replicas = await self.store.replicas_alive(OWNER, self.clock(), REPLICA_TTL)
        self.metrics.replicas.set(replicas)
        self.on_replicas(replicas)
        return 0

    async def first_beat(self) -> None:
        """Before the first request to Kallglot, so that a replica joining takes its share at once.
        A store that does not answer yet is no reason not to start: the loop beats again."""
        try:
            await self.run_once()
        except StoreError as exc:
            log.warning("heartbeat.store_unavailable", extra={"error": str(exc)})

    async def run(self, stop: asyncio.Event) -> None:
        await super().run(stop)
        # The others stop counting this one at once (bounded: a store that is down must not hold up
        # the shutdown; its row then expires after REPLICA_TTL).
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self.store.replica_gone(OWNER)
