"""Retry-After and X-RateLimit-* parsing, request pacing, capped jittered backoff; pure.

Nothing here sleeps or reads a clock: callers pass ``now`` and sleep for what is returned, so
tests drive time by hand.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


def backoff(
    attempt: int,
    *,
    initial: float,
    maximum: float,
    multiplier: float = 2.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, "equal jitter".

    The result lies in ``[d/2, d]`` with ``d = min(maximum, initial * multiplier**(attempt-1))``,
    so retries never bunch at zero yet many clients failing together spread out.
    """
    exponent = max(0, attempt - 1)
    try:
        delay = initial * multiplier**exponent
    except OverflowError:
        delay = maximum
    delay = min(maximum, delay)
    return delay / 2 + rand() * delay / 2


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(seconds, 86400.0))


@dataclass(frozen=True)
class RateLimit:
    """What the last response said about the window (``X-RateLimit-*``)."""

    limit: int | None
    remaining: int | None
    reset_at: float | None


def parse_rate_limit(headers: Mapping[str, str], now: float) -> RateLimit | None:
    """Read ``X-RateLimit-Limit/Remaining/Reset``; ``Reset`` may be a Unix time or seconds from now."""

    def number(name: str) -> float | None:
        raw = headers.get(name)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            return None
        return value if value >= 0 and value == value else None

    limit, remaining, reset = (
        number("x-ratelimit-limit"),
        number("x-ratelimit-remaining"),
        number("x-ratelimit-reset"),
    )
    if limit is None and remaining is None and reset is None:
        return None
    reset_at: float | None = None
    if reset is not None:
        # Kallglot documents a Unix timestamp; tolerate a relative number of seconds too.
        reset_at = reset if reset > 1_000_000_000 else now + reset
    return RateLimit(
        limit=int(limit) if limit is not None else None,
        remaining=int(remaining) if remaining is not None else None,
        reset_at=reset_at,
    )


class Pacer:
    """Spreads requests over the rate-limit window so that 429s stay rare.

    With ``remaining`` requests left until ``reset_at``, requests are spaced
    ``(reset_at - now) / remaining`` apart; a 429 blocks everyone until ``Retry-After``.
    Each ``reserve`` books a slot, so concurrent callers queue behind each other.
    """

    def __init__(self, *, safety: float = 0.9) -> None:
        self._safety = safety
        self._remaining: float | None = None
        self._reset_at: float | None = None
        self._blocked_until = 0.0
        self._next_slot = 0.0

    @property
    def blocked_until(self) -> float:
        return self._blocked_until

    def observe(self, rate: RateLimit | None, now: float) -> None:
        if rate is None:
            return
        new_window = rate.reset_at is not None and (self._reset_at is None or rate.reset_at > self._reset_at)
        if new_window:
            self._reset_at = rate.reset_at
        if rate.remaining is not None:
            told = rate.remaining * self._safety if rate.remaining > 1 else float(rate.remaining)
            # Answers to concurrent requests arrive out of order: within a window, an older (higher)
            # count must not undo the slots booked since, so only a new window raises the estimate.
            if new_window or self._remaining is None:
                self._remaining = told
            else:
                self._remaining = min(self._remaining, told)

    def block(self, until: float) -> None:
        """Nobody sends before ``until`` (after a 429)."""
        self._blocked_until = max(self._blocked_until, until)
        self._next_slot = max(self._next_slot, until)

    def reserve(self, now: float) -> float:
        """Book the next slot; return how long to wait before sending (0 = now)."""
        start = max(now, self._blocked_until, self._next_slot)
        if self._reset_at is not None and self._remaining is not None:
            if start >= self._reset_at:
                # A new window has begun; we know nothing of its budget until the next response.
                self._remaining = None
                spacing = 0.0
            elif self._remaining < 1:
                start = self._reset_at
                self._remaining = None
                spacing = 0.0
            else:
                spacing = (self._reset_at - start) / self._remaining
                self._remaining -= 1
        else:
            spacing = 0.0
        self._next_slot = start + spacing
        return start - now
