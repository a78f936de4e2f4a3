"""One destination: a configured handler with its subscription, its policies and its live state.

Built once by the composition root (``receiver.app``) from each validated subscription, then shared
by the delivering use case (which handler, which ``when``, which retry policy) and the delivery loop
(how many to claim now: concurrency left, the rate limit's next slot, the circuit breaker).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from receiver.delivery import CircuitPolicy, Handler, HandlerOptions
from receiver.fanout import Subscription


@dataclass
class Circuit:
    """A handler's circuit breaker: open after ``failure_threshold`` transient failures in a row,
    one probe after ``open_seconds``, closed again on the first success."""

    handler: str
    policy: CircuitPolicy
    failures: int = 0
    open_until: float | None = None
    probing: bool = False

    def allowance(self, now: float, free: int) -> int:
        if self.open_until is None:
            return free
        if now < self.open_until or self.probing:
            return 0
        self.probing = True
        return min(free, 1)

    def record(self, ok: bool, now: float, on_change: Callable[[str, bool], None]) -> None:
        self.probing = False
        if ok:
            if self.open_until is not None:
                on_change(self.handler, False)
            self.failures, self.open_until = 0, None
            return
        self.failures += 1
        if self.open_until is not None or self.failures >= self.policy.failure_threshold:
            if self.open_until is None:
                on_change(self.handler, True)
            self.open_until = now + self.policy.open_seconds

    def no_probe(self) -> None:
        """The probe granted by ``allowance`` never reached the handler (nothing was due, or the
        delivery needed no handler): the next ``allowance`` may grant it again."""
        self.probing = False


@dataclass
class Destination:
    """A handler, its subscription (events, ``when``, ``fields``), its policies (``options``: retry,
    circuit, concurrency, rate limit, enrichment) and its live state in this process."""

    options: HandlerOptions
    subscription: Subscription
    handler: Handler
    circuit: Circuit
    #: Pacing: no claim before this time (the rate limit spreads each claimed batch over its slots).
    next_slot: float = 0.0
    in_flight: int = 0

    @classmethod
    def build(cls, subscription: Subscription, handler: Handler) -> Destination:
        options = subscription.options
        return cls(options, subscription, handler, Circuit(options.name, options.circuit))

    @property
    def name(self) -> str:
        return self.options.name

    def allowance(self, now: float) -> int:
        """How many deliveries may be claimed now: the concurrency left, within the rate limit's
        slot and what the circuit breaker lets through."""
        free = self.options.concurrency - self.in_flight
        rate = self.options.rate_limit_per_second
        if rate:
            if self.next_slot > now:
                return 0
            free = min(free, max(1, int(rate)))
        return self.circuit.allowance(now, free)

    def pace(self, now: float, count: int) -> list[float]:
        """The start delay of each of ``count`` deliveries just claimed, spread by the rate limit;
        the next claim waits until the last of them has started."""
        rate = self.options.rate_limit_per_second
        if not rate:
            return [0.0] * count
        if count:
            self.next_slot = now + count / rate
        return [index / rate for index in range(count)]
