"""Composition root: ``create_app(settings)`` wires store, Kallglot client, handlers, use cases and loops.

It returns the PUBLIC app (RECEIVER_PORT: inbound webhooks and health), which owns the lifespan;
``admin_app(app)`` is the ADMIN app (RECEIVER_ADMIN_PORT: metrics, admin API, console, OpenAPI,
health), which shares its state. Resources are owned by the public app's lifespan. On shutdown the
app reports not-ready, stops claiming work, lets in-flight work finish until one deadline
(``RECEIVER_SHUTDOWN_GRACE_SECONDS`` after the signal, shared with the HTTP drain of
``receiver.listeners``), cancels what is left (it is given back and due again) and closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount

from receiver.carriers.routes import ADMIN_ROUTES as CARRIER_ADMIN_ROUTES
from receiver.carriers.routes import PUBLIC_ROUTES as CARRIER_PUBLIC_ROUTES
from receiver.carriers.setup import build as build_telephony
from receiver.delivery import HandlerContext
from receiver.destination import Destination
from receiver.fanout import Subscription
from receiver.gate import StartGate
from receiver.kallglot import HandlerReader, KallglotClient
from receiver.metrics import Metrics
from receiver.registry import build_handler, parse_subscriptions
from receiver.requestmetrics import RequestMetrics
from receiver.routes import ADMIN_ROUTES, EXCEPTION_HANDLERS, PUBLIC_ROUTES, HttpState
from receiver.settings import ConfigError, Settings
from receiver.store import Store, StoreError, open_store
from receiver.usecases import (
    AnalysisSettings,
    Attempts,
    Delivering,
    Following,
    Intake,
    Results,
    Sessions,
    Starting,
    Wakeups,
)
from receiver.version import VERSION
from receiver.workers import Deliverer, Heartbeat, Loop, Maintenance, Poller, Starter

log = logging.getLogger("receiver")

USER_AGENT = f"kallglot-receiver/{VERSION}"


@dataclass
class Runtime:
    """Everything the lifespan built, exposed on ``app.state.runtime`` for tests and the CLI."""

    metrics: Metrics
    loops: list[Loop]
    stop: asyncio.Event
    http: HttpState
    grace: float
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _drained: asyncio.Future[int] | None = None

    def drain(self, deadline: float | None = None) -> asyncio.Future[int]:
        """Stop claiming work, wait for in-flight work until ``deadline`` (``time.monotonic()``), then
        cancel what is left; how many were cancelled. Idempotent: the second call joins the first."""
        if self._drained is None:
            if deadline is None:
                deadline = time.monotonic() + self.grace
            self._drained = asyncio.ensure_future(self._drain(deadline))
        return self._drained

    async def _drain(self, deadline: float) -> int:
        self.http.draining = True
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        in_flight = {task for loop in self.loops for task in loop.tasks}
        if not in_flight:
            return 0
        # Keep a slice of the grace for the cancelled work to give its claims back to the store.
        reserve = min(2.0, 0.2 * self.grace)
        _, pending = await asyncio.wait(in_flight, timeout=max(0.0, deadline - reserve - time.monotonic()))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=max(0.1, deadline - time.monotonic()))
        return len(pending)


def analysis_settings(settings: Settings) -> AnalysisSettings:
    return AnalysisSettings(
        profile=settings.analysis_profile,
        include=tuple(settings.analysis_include),
        trigger=settings.trigger,
        poll_after_seconds=settings.poll_after_seconds,
        deadline_seconds=settings.analysis_deadline_seconds,
        credit_reserve=settings.credit_reserve,
        min_duration_seconds=settings.min_duration_seconds,
    )


async def prepare_store(db: Store, settings: Settings, clock: Callable[[], float]) -> Store:
    """Open the store, migrate it (or check it is migrated) and release stale leases: the only
    place that does, so ``serve`` migrates once; a store we cannot use is a ``ConfigError``."""
    try:
        await db.open()
        if settings.migrate_on_start:
            applied = await db.migrate()
            if applied:
                log.info("store.migrated", extra={"migrations": applied})
        elif not await db.ready():
            raise ConfigError("the database is not migrated: run 'kallglot-receiver migrate'")
        released = await db.release_stale_leases(clock())
        if released:
            log.info("store.stale_leases_released", extra={"leases": released})
    except StoreError as exc:
        raise ConfigError(f"invalid setting RECEIVER_DATABASE_URL: {exc}") from None
    return db


@dataclass(frozen=True)
class UseCases:
    """The use cases of one process, wired over one store and one Kallglot client."""

    intake: Intake
    starting: Starting
    following: Following
    delivering: Delivering
    sessions: Sessions
    wakeups: Wakeups


def wire(
    db: Store,
    kallglot: KallglotClient,
    destinations: dict[str, Destination],
    metrics: Metrics,
    analysis: AnalysisSettings,
    clock: Callable[[], float],
    pause_seconds: tuple[float, float],
) -> UseCases:
    """Each use case with exactly the collaborators it needs; the parts they share are made once."""
    wakeups = Wakeups()
    sessions = Sessions(kallglot)
    attempts = Attempts(db, clock)
    subscriptions = [destination.subscription for destination in destinations.values()]
    results = Results(db, subscriptions, metrics, wakeups, clock)
    return UseCases(
        intake=Intake(
            store=db, results=results, sessions=sessions, settings=analysis, wakeups=wakeups, clock=clock
        ),
        starting=Starting(
            store=db,
            kallglot=kallglot,
            gate=StartGate(clock, metrics, *pause_seconds),
            results=results,
            attempts=attempts,
            sessions=sessions,
            metrics=metrics,
            settings=analysis,
            clock=clock,
        ),
        following=Following(
            store=db, kallglot=kallglot, results=results, attempts=attempts, settings=analysis, clock=clock
        ),
        delivering=Delivering(
            store=db,
            destinations=destinations,
            attempts=attempts,
            sessions=sessions,
            metrics=metrics,
            clock=clock,
        ),
        sessions=sessions,
        wakeups=wakeups,
    )


def build_metrics(subscriptions: list[Subscription]) -> Metrics:
    metrics = Metrics()
    metrics.declare_handlers(subscription.name for subscription in subscriptions)
    metrics.credits_paused.set(0)
    return metrics


def build_kallglot(
    settings: Settings,
    metrics: Metrics,
    clock: Callable[[], float],
    transport: httpx.AsyncBaseTransport | None,
) -> KallglotClient:
    api_key = settings.kallglot_api_key.get_secret_value() if settings.kallglot_api_key else ""
    return KallglotClient(
        settings.kallglot_api_url,
        api_key,
        metrics=metrics,
        timeout=settings.kallglot_timeout_seconds,
        transport=transport,
        clock=clock,
        user_agent=USER_AGENT,
        rate_share=settings.kallglot_rate_share or 1.0,
    )


def share_rate_limit(settings: Settings, kallglot: KallglotClient, metrics: Metrics) -> Callable[[int], None]:
    """What the heartbeat does with the number of live replicas: unless RECEIVER_KALLGLOT_RATE_SHARE
    fixes it, this replica's part of the organisation's rate limit is 1/N."""
    budget = kallglot.throttle.budget
    metrics.rate_share.set(budget.share)

    def apply(replicas: int) -> None:
        if settings.kallglot_rate_share is None and budget.share != 1 / max(1, replicas):
            budget.share = 1 / max(1, replicas)
            metrics.rate_share.set(budget.share)
            log.info("kallglot.rate_share", extra={"replicas": replicas, "share": round(budget.share, 4)})

    return apply


def build_destinations(
    subscriptions: list[Subscription], kallglot: KallglotClient, clock: Callable[[], float]
) -> dict[str, Destination]:
    """One destination per configured handler, in configuration order, sharing one handler context."""
    context = HandlerContext(
        kallglot=HandlerReader(kallglot), clock=clock, sleep=asyncio.sleep, user_agent=USER_AGENT
    )
    return {
        subscription.name: Destination.build(subscription, build_handler(subscription.options, context))
        for subscription in subscriptions
    }


async def detect_orphans(delivering: Delivering) -> None:
    try:  # issue 8 hole 9: deliveries of handlers no longer configured become orphaned
        await delivering.detect_orphans()
    except StoreError as exc:  # never claimed anyway: the next start-up looks again
        log.warning("delivery.orphan_check_failed", extra={"error": str(exc)})


def build_http_state(
    settings: Settings,
    cases: UseCases,
    db: Store,
    handlers: list[str],
    metrics: Metrics,
    clock: Callable[[], float],
) -> HttpState:
    """What the endpoints of both listeners share: the use cases they hand work to and the secrets."""
    return HttpState(
        intake=cases.intake,
        store=db,
        handlers=handlers,
        gate=cases.starting.gate,
        wakeups=cases.wakeups,
        metrics=metrics,
        clock=clock,
        kallglot_secrets=[s.get_secret_value() for s in settings.kallglot_webhook_secrets],
        inbound_secrets=[s.get_secret_value() for s in settings.inbound_secrets],
        admin_token=settings.admin_token.get_secret_value() if settings.admin_token else None,
        tolerance=settings.webhook_tolerance_seconds,
        max_body=settings.max_body_bytes,
        show_personal_data=settings.admin_show_personal_data,
    )


def build_loops(
    settings: Settings,
    cases: UseCases,
    db: Store,
    handlers: list[str],
    metrics: Metrics,
    clock: Callable[[], float],
    worker_tick: float,
    heartbeat: Heartbeat,
) -> list[Loop]:
    """The background loops: each asks its use case for due work; maintenance trims the store."""
    wakeups = cases.wakeups
    return [
        heartbeat,
        Starter(cases.starting, wakeups, tick=worker_tick, concurrency=settings.start_concurrency),
        Poller(cases.following, wakeups, tick=worker_tick, concurrency=settings.poll_concurrency),
        Deliverer(cases.delivering, wakeups, tick=worker_tick),
        Maintenance(
            db,
            metrics,
            handlers,
            clock,
            event_retention=settings.event_retention_hours * 3600,
            call_retention=settings.retention_days * 86400,
            session_memory=settings.session_memory_days * 86400,
        ),
    ]


def start_loops(loops: list[Loop], metrics: Metrics, http: HttpState, grace: float) -> Runtime:
    """Start every loop as a task owned by the returned ``Runtime`` (which drains them)."""
    runtime = Runtime(metrics=metrics, loops=loops, stop=asyncio.Event(), http=http, grace=grace)
    runtime.tasks = [asyncio.create_task(loop.run(runtime.stop), name=loop.name) for loop in loops]
    return runtime


async def close_resources(destinations: dict[str, Destination], kallglot: KallglotClient, db: Store) -> None:
    """Close in the reverse order of building; a handler failing to close does not keep the rest open."""
    for destination in destinations.values():
        with contextlib.suppress(Exception):
            await destination.handler.aclose()
    await kallglot.aclose()
    await db.close()


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    kallglot_transport: httpx.AsyncBaseTransport | None = None,
    store: Store | None = None,
    mounts: list[Mount] | None = None,
    on_startup: list[Callable[[], Any]] | None = None,
    on_shutdown: list[Callable[[], Any]] | None = None,
    on_ready: list[Callable[[], None]] | None = None,
    worker_tick: float = 1.0,
    pause_seconds: tuple[float, float] | None = None,
) -> Starlette:
    """Build the ASGI app. ``mounts`` lets ``serve --sandbox`` put the sandbox beside the receiver;
    ``on_ready`` runs once start-up can no longer fail (the CLI's warnings and banner)."""
    settings.require_production_secrets()
    subscriptions = parse_subscriptions(settings.handlers)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for hook in on_startup or ():
            await hook()
        db = await prepare_store(
            store or open_store(settings.database_url.get_secret_value()), settings, clock
        )
        metrics = build_metrics(subscriptions)
        kallglot = build_kallglot(settings, metrics, clock, kallglot_transport)
        destinations = build_destinations(subscriptions, kallglot, clock)
        handlers = list(destinations)
        cases = wire(
            db,
            kallglot,
            destinations,
            metrics,
            analysis_settings(settings),
            clock,
            pause_seconds or (15.0, settings.start_probe_max_seconds),
        )
        await detect_orphans(cases.delivering)
        db.subscribe(cases.wakeups)
        app.state.telephony, app.state.pbx = build_telephony(
            settings,
            store=db,
            analysis=cases.intake.settings,
            sessions=cases.sessions,
            wakeups=cases.wakeups,
            metrics=metrics,
            clock=clock,
        )
        await app.state.telephony.refresh_unmatched()
        app.state.http = build_http_state(settings, cases, db, handlers, metrics, clock)
        heartbeat = Heartbeat(db, metrics, clock, share_rate_limit(settings, kallglot, metrics))
        await heartbeat.first_beat()  # this replica's share is right before its first request
        loops = build_loops(settings, cases, db, handlers, metrics, clock, worker_tick, heartbeat)
        runtime = start_loops(loops, metrics, app.state.http, settings.shutdown_grace_seconds)
        app.state.runtime = runtime
        log.info("receiver.started", extra={"handlers": handlers, "trigger": settings.trigger})
        for hook in on_ready or ():
            hook()
        try:
            yield
        finally:
            cancelled = await runtime.drain()
            log.info("receiver.stopped", extra={"cancelled_in_flight": cancelled})
            await close_resources(destinations, kallglot, db)
            for hook in on_shutdown or ():
                await hook()

    return build_apps(lifespan, mounts or [])


def build_apps(
    lifespan: Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]],
    mounts: list[Mount],
) -> Starlette:
    """The public app (with the lifespan) and the admin app sharing its state (``admin_app``)."""
    middleware = [Middleware(RequestMetrics)]
    public = Starlette(
        routes=[*PUBLIC_ROUTES, *CARRIER_PUBLIC_ROUTES, *mounts],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=middleware,
        lifespan=lifespan,
    )
    admin = Starlette(
        routes=[*ADMIN_ROUTES, *CARRIER_ADMIN_ROUTES],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=middleware,
    )
    admin.state = public.state  # one runtime, one HttpState: the admin app has no lifespan of its own
    public.state.admin_app = admin
    return public


def admin_app(app: Starlette) -> Starlette:
    """The admin listener's app of a ``create_app`` result (served without a lifespan)."""
    admin: Starlette = app.state.admin_app
    return admin
