"""The metrics of CONTRACT §6 (plus a few operational ones) on an injected registry. No label carries an id."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from receiver import lifecycle
from receiver.pacing import RateLimit
from receiver.store import Stats
from receiver.version import package_version

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LONG = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
STAGES = ("start", "analysis", "delivery")
ACTIVE_STATES = tuple(state.value for state in lifecycle.ACTIVE)


class Metrics:
    """Owns every metric; components call its small methods instead of touching collectors."""

    def __init__(self, registry: CollectorRegistry | None = None, *, version: str | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.credits_remaining = Gauge(
            "kallglot_api_credits_remaining",
            "X-API-Credits-Remaining of the last Kallglot response",
            registry=r,
        )
        self.credits_used = Gauge(
            "kallglot_api_credits_used", "X-API-Credits-Used (current billing period)", registry=r
        )
        self.ratelimit_remaining = Gauge(
            "kallglot_api_ratelimit_remaining",
            "X-RateLimit-Remaining of the last Kallglot response",
            registry=r,
        )
        self.ratelimit_limit = Gauge("kallglot_api_ratelimit_limit", "X-RateLimit-Limit", registry=r)
        self.api_requests = Counter(
            "kallglot_api_requests", "Kallglot API requests", ["operation", "status"], registry=r
        )
        self.api_duration = Histogram(
            "kallglot_api_request_duration_seconds",
            "Kallglot API request latency",
            ["operation"],
            buckets=_LATENCY,
            registry=r,
        )
        self.events = Counter("receiver_events", "Inbound events", ["source", "type", "outcome"], registry=r)
        self.analyses_started = Counter(
            "receiver_analyses_started", "Analyses accepted by Kallglot (credits spent)", registry=r
        )
        self.analyses_finished = Counter(
            "receiver_analyses_finished", "Analyses finished", ["status", "via"], registry=r
        )
        self.analyses_skipped = Counter(
            "receiver_analyses_skipped",
            "Calls skipped by a guardrail (no credit spent)",
            ["reason"],
            registry=r,
        )
        self.analysis_duration = Histogram(
            "receiver_analysis_duration_seconds", "Analysis started to finished", buckets=_LONG, registry=r
        )
        self.call_to_delivery = Histogram(
            "receiver_call_to_delivery_seconds",
            "Call-ended event received to delivered",
            ["handler"],
            buckets=_LONG,
            registry=r,
        )
        self.deliveries = Counter(
            "receiver_deliveries", "Delivery attempts by outcome", ["handler", "outcome"], registry=r
        )
        self.delivery_duration = Histogram(
            "receiver_delivery_duration_seconds",
            "One delivery attempt",
            ["handler"],
            buckets=_LATENCY,
            registry=r,
        )
        self.backlog = Gauge("receiver_backlog", "Work waiting per stage", ["stage"], registry=r)
        self.oldest_pending = Gauge(
            "receiver_oldest_pending_seconds",
            "Age of the oldest work waiting per stage",
            ["stage"],
            registry=r,
        )
        self.dead_letters = Gauge(
            "receiver_dead_letters", "Dead-lettered deliveries", ["handler"], registry=r
        )
        self.calls = Gauge("receiver_calls", "Calls in the store by state", ["state"], registry=r)
        self.credits_paused = Gauge(
            "receiver_credits_paused", "1 while starting is paused for credits or subscription", registry=r
        )
        self.circuit_open = Gauge(
            "receiver_handler_circuit_open",
            "1 while a handler's circuit breaker is open",
            ["handler"],
            registry=r,
        )
        self.store_up = Gauge("receiver_store_up", "1 when the last store operation succeeded", registry=r)
        self.replicas = Gauge(
            "receiver_replicas", "Serve processes seen alive on this store (this one included)", registry=r
        )
        self.rate_share = Gauge(
            "kallglot_api_rate_share",
            "This replica's part of the organisation's Kallglot rate limit",
            registry=r,
        )
        self.orphaned_deliveries = Gauge(
            "receiver_orphaned_deliveries",
            "Deliveries whose handler is no longer configured (discard or move them)",
            ["handler"],
            registry=r,
        )
        self._orphaned_labels: set[str] = set()
        self._event_children: dict[tuple[str, str, str], Any] = {}
        self._add_runtime_metrics(r, version)
        # Unknown until Kallglot answers once: NaN, so that "credits below N" alerts do not fire at start.
        for gauge in (
            self.credits_remaining,
            self.credits_used,
            self.ratelimit_remaining,
            self.ratelimit_limit,
        ):
            gauge.set(float("nan"))

    def _add_runtime_metrics(self, r: CollectorRegistry, version: str | None) -> None:
        """Build info, the process/Python/GC collectors and the inbound request histogram."""
        self.build_info = Info("receiver_build", "The running receiver's version", registry=r)
        self.build_info.info({"version": version or package_version()})
        # The default registry's collectors are registered there only: our injected registry needs its own.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.http_duration = Histogram(
            "receiver_http_request_duration_seconds",
            "Inbound HTTP requests by route template and status class",
            ["method", "route", "status"],
            buckets=_LATENCY,
            registry=r,
        )

    def declare_handlers(self, names: Iterable[str]) -> None:
        """Export zeros for every handler so dashboards and alerts see the series from the start."""
        for name in names:
            self.dead_letters.labels(name).set(0)
            self.circuit_open.labels(name).set(0)
            for outcome in ("delivered", "retried", "dead_lettered"):
                self.deliveries.labels(name, outcome)

    def kallglot_request(self, operation: str, status: str, seconds: float) -> None:
        self.api_requests.labels(operation, status).inc()
        self.api_duration.labels(operation).observe(seconds)

    def observe_kallglot(
        self, credits_remaining: float | None, credits_used: float | None, rate: RateLimit | None
    ) -> None:
        if credits_remaining is not None:
            self.credits_remaining.set(credits_remaining)
        if credits_used is not None:
            self.credits_used.set(credits_used)
        if rate is not None:
            if rate.remaining is not None:
                self.ratelimit_remaining.set(rate.remaining)
            if rate.limit is not None:
                self.ratelimit_limit.set(rate.limit)

    def event(self, source: str, event_type: str, outcome: str) -> None:
        key = (source, event_type, outcome)
        child = self._event_children.get(key)
        if child is None:  # labels() takes a lock and builds a key: once per combination is enough
            child = self._event_children[key] = self.events.labels(*key)
        child.inc()

    def apply_stats(self, stats: Stats, handlers: Iterable[str]) -> None:
        for stage in STAGES:
            self.backlog.labels(stage).set(stats.backlog.get(stage, 0))
            self.oldest_pending.labels(stage).set(stats.oldest.get(stage, 0.0))
        for name in handlers:
            self.dead_letters.labels(name).set(stats.dead_letters.get(name, 0))
        for state in ACTIVE_STATES:
            self.calls.labels(state).set(stats.calls_by_state.get(state, 0))
        self.set_orphaned(stats.orphaned)

    def set_orphaned(self, counts: dict[str, int]) -> None:
        """One series per orphaned handler; a handler's series drops to 0 once it has none left."""
        self._orphaned_labels |= set(counts)
        for name in self._orphaned_labels:
            self.orphaned_deliveries.labels(name).set(counts.get(name, 0))
