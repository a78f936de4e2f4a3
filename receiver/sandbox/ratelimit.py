"""Fixed-window request budgets with an injected clock: what ``X-RateLimit-*`` and 429 report; pure."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Quota:
    """The outcome of one request against a window, and what the rate-limit headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset_at: float
    retry_after: float

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }


class FixedWindow:
    """A window opens at the first request after the previous one closed and allows ``limit`` requests."""

    __slots__ = ("count", "start")

    def __init__(self) -> None:
        self.start = -math.inf
        self.count = 0

    def _roll(self, now: float, window: float) -> None:
        if now >= self.start + window or now < self.start:
            self.start = now
            self.count = 0

    def peek(self, now: float, limit: int, window: float) -> Quota:
        """The quota as it stands, without spending anything."""
        self._roll(now, window)
        reset_at = self.start + window
        remaining = max(0, limit - self.count)
        return Quota(remaining > 0, limit, remaining, reset_at, max(0.0, reset_at - now))

    def take(self, now: float, limit: int, window: float) -> Quota:
        """Spend one request if the budget allows; a refused request costs nothing."""
        quota = self.peek(now, limit, window)
        if not quota.allowed:
            return quota
        self.count += 1
        return Quota(True, limit, quota.remaining - 1, quota.reset_at, quota.retry_after)
