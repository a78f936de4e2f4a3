"""The start gate: pauses starting analyses while Kallglot refuses them (credits, subscription, key).

While paused, one call is let through as a probe when the pause ends; the pause doubles after each
refusal but never beyond ``max_pause`` (``RECEIVER_START_PROBE_MAX_SECONDS``, default 30 s), so
starting resumes within that bound once the account is fixed. A pause for credits also ends at
once when ANY authenticated Kallglot answer seen after the pause (a poll, a session look-up) shows
credits above the reserve: see ``observe_credits``. Operators resume it with ``resume()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from receiver.metrics import Metrics

log = logging.getLogger("receiver")


class Allowance(Enum):
    """How many calls the gate lets the starter claim now."""

    OPEN = "open"  # not paused: no limit from the gate
    SHUT = "shut"  # paused: none
    PROBE = "probe"  # the pause is over: one call, as a probe


@dataclass
class StartGate:
    """Pauses starting analyses while Kallglot refuses them for credits, subscription or key."""

    clock: Callable[[], float]
    metrics: Metrics
    min_pause: float = 15.0
    max_pause: float = 30.0
    paused_until: float = 0.0
    reason: str | None = None
    #: True when the pause is about credits (402 or the reserve): a balance can end it.
    for_credits: bool = False
    _interval: float = field(default=0.0)

    def allowance(self, now: float) -> Allowance:
        """What may be claimed now: nothing while paused, one probe once the pause is over."""
        if self.reason is None:
            return Allowance.OPEN
        return Allowance.PROBE if now >= self.paused_until else Allowance.SHUT

    def pause(self, reason: str, now: float, *, for_credits: bool = False) -> float:
        floor = min(self.min_pause, self.max_pause)
        self._interval = min(self.max_pause, max(floor, self._interval * 2))
        self.paused_until = now + self._interval
        if self.reason != reason:
            log.warning("starting.paused", extra={"reason": reason, "retry_in": self._interval})
        self.reason = reason
        self.for_credits = for_credits
        self.metrics.credits_paused.set(1)
        return self.paused_until

    def observe_credits(self, credits: float | None, reserve: float) -> bool:
        """Resume a pause for credits when a fresh balance is above the reserve; True if it did."""
        if self.reason is None or not self.for_credits or credits is None or credits <= reserve:
            return False
        log.info("starting.credits_back", extra={"credits_remaining": credits})
        self.resume()
        return True

    def resume(self) -> None:
        """Start again at once (also the operators' ``resume`` action)."""
        if self.reason is not None:
            log.info("starting.resumed", extra={"after": self.reason})
        self.reason = None
        self.for_credits = False
        self._interval = 0.0
        self.paused_until = 0.0
        self.metrics.credits_paused.set(0)
