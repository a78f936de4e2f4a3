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


class Budget:
    """One request budget for every call to Kallglot: uniform spacing across the window.

    ``X-RateLimit-Reset`` is a whole Unix second, so the window's length is learned from bounds:
    the answer that opened a window (``remaining == limit - 1``) bounds it from above
    (``reset - sent``) and below (``reset - 1 - answered``); an answer still counted in a window
    shows it is longer than ``sent - opener answered``; the opener of the next one shows it is
    not longer than ``answered - previous opener sent``. With limit ``L`` and the window's length
    ``W`` (the upper bound, or a little above the middle once the bounds are close) requests go
    ``W / (L * share)`` apart, which fills every window without a burst at its start; the last
    known limit carries into the next window instead of starting each one blind. Until anything
    is known, one request at a time probes. ``share`` is this replica's part of the
    organisation's limit (1/N for N replicas): of the count left in a window it plans with its
    share only (the others spend theirs), and a window another replica opened is known to have
    opened by the time our first answer in it came, which bounds its end closer than the
    whole-second reset.

    ``take`` hands out a ticket; ``observe`` needs it so that answers arriving out of order are
    corrected for the requests sent after them. A 429 blocks everyone until ``Retry-After`` and
    widens the spacing; each answer that was not a 429 narrows it again, down to the computed one.
    """

    def __init__(self, *, share: float = 1.0, margin: float = 0.01) -> None:
        self._share = share
        self._margin = margin
        self._limit: int | None = None
        self._window: float | None = None
        self._unlimited = False
        self._probe: int | None = None  # ticket of the probe in flight
        self._reset_header: float | None = None  # the current window's X-RateLimit-Reset
        self._last_header = float("-inf")  # the newest X-RateLimit-Reset seen
        self._opened_at: float | None = None  # when the request that opened it was sent (see _exact)
        self._opened_answered = 0.0  # … and when its answer came
        self._exact = False  # _opened_at is the opener's; else the window had opened by then
        self._floor = 0.0  # the window is longer than this (lower bound, see _bisect)
        self._remaining: float | None = None
        self._sent = 0
        self._next_at = 0.0
        self._blocked_until = 0.0
        self._slowdown = 1.0

    @property
    def share(self) -> float:
        return self._share

    @share.setter
    def share(self, share: float) -> None:
        """A new part of the organisation's limit (replicas came or went); the next gap uses it."""
        if not 0 < share <= 1:
            raise ValueError(f"a rate share is in (0, 1], not {share}")
        self._share = share

    @property
    def blocked_until(self) -> float:
        return self._blocked_until

    @property
    def limit(self) -> int | None:
        return self._limit

    @property
    def window(self) -> float | None:
        return self._window

    def spacing(self) -> float:
        """The steady gap between two requests (0 while the limit or window is unknown)."""
        if self._unlimited or self._limit is None or self._window is None:
            return 0.0
        return self._span() * self._slowdown / (max(1, self._limit) * self._share)

    def _span(self) -> float:
        """The window length to plan with: its upper bound, or (when the bounds are close) a little
        above their middle, never shorter than the real one."""
        assert self._window is not None
        middle = (self._floor + self._window) / 2 if self._floor > 0 else self._window
        return max(self._window, middle * (1 + self._margin))

    def _reset_at(self) -> float | None:
        """When the current window ends, as well as we know it (a little late rather than early)."""
        if self._reset_header is None:
            return None
        if self._opened_at is None or self._window is None:
            return self._reset_header
        return min(self._reset_header, self._opened_at + self._span())

    def _roll(self, now: float) -> None:
        reset_at = self._reset_at()
        if reset_at is not None and now >= reset_at:
            # A new window: carry the last known limit into it rather than starting blind.
            self._reset_header = self._opened_at = None
            known = self._limit is not None and self._window is not None
            self._remaining = (self._limit or 0) * self._share if known else None

    def next_at(self, now: float) -> float | None:
        """When the next request may go; None while a probe is in flight (wait for its answer)."""
        self._roll(now)
        start = max(now, self._next_at, self._blocked_until)
        if self._unlimited:
            return start
        if self._probe is not None and (self._limit is None or self._remaining is None):
            return None
        reset_at = self._reset_at()
        if self._remaining is not None and self._remaining < 1 and reset_at is not None:
            start = max(start, reset_at)
        return start

    def take(self, now: float) -> int:
        """Book a request sent at ``now`` (call only when ``next_at(now) <= now``); return its ticket."""
        self._roll(now)
        self._sent += 1
        gap = self.spacing()
        reset_at = self._reset_at()
        if self._remaining is not None and reset_at is not None and reset_at > now:
            # Less left than the steady pace assumes (another client spends from it): spread what
            # is left so that the slot after the last one falls on the reset.
            gap = max(gap, (reset_at - now) / max(self._remaining, 1.0))
            self._remaining -= 1
        elif self._remaining is not None:
            self._remaining -= 1
        if not self._unlimited and (self._limit is None or self._remaining is None):
            self._probe = self._sent
        self._next_at = now + gap
        return self._sent

    def observe(self, rate: RateLimit | None, ticket: int, sent_at: float, now: float) -> None:
        """An answer to the request with ``ticket`` (sent at ``sent_at``) arrived at ``now``."""
        if self._probe == ticket:
            self._probe = None
        if rate is None:
            if self._limit is None:
                self._unlimited = True  # answers carry no budget: nothing to pace
            return
        self._unlimited = False
        if rate.limit is not None:
            self._limit = rate.limit
        if rate.remaining is None or rate.reset_at is None:
            return
        if self._limit is not None and rate.remaining == self._limit - 1:
            # This request opened its window: between its sending and its answer. The whole-second
            # reset bounds the length from above and from below.
            self._shorten(rate.reset_at - sent_at)
            self._floor = max(self._floor, rate.reset_at - 1 - now)
        # Our part of what is left (the other replicas spend theirs), less what we sent since.
        after = rate.remaining * self._share - (self._sent - ticket)
        opener = rate.remaining == (self._limit or 0) - 1
        if rate.reset_at > self._last_header:
            if opener and self._opened_at is not None and self._exact:
                # It opened the next window, so the last one had ended by now: not longer than this.
                self._shorten(now - self._opened_at)
            self._last_header = self._reset_header = rate.reset_at
            # Another client (a replica) opened it: it had opened by the time this answer came, which
            # bounds its end better than the whole-second reset does.
            self._opened_at, self._exact = (sent_at, True) if opener else (now, False)
            self._opened_answered = now
            self._remaining = after
        elif rate.reset_at == self._reset_header:
            if self._opened_at is not None:
                # Still counted in the window, so it had not ended when this was sent: longer.
                self._floor = max(self._floor, sent_at - self._opened_answered)
            # Answers to concurrent requests arrive out of order: an older (higher) count must
            # not undo the requests sent since, so within a window only the lowest count counts.
            if opener:
                self._opened_at, self._opened_answered, self._exact = sent_at, now, True
            self._remaining = after if self._remaining is None else min(self._remaining, after)
        self._slowdown = max(1.0, self._slowdown * 0.98)

    def _shorten(self, sample: float) -> None:
        if sample > 0 and (self._window is None or sample < self._window):
            self._window = sample
        if self._window is not None and self._floor >= self._window:
            self._floor = 0.0  # the window changed: bounds that contradict are forgotten

    def lost(self, ticket: int) -> None:
        """The request with ``ticket`` got no answer (or its answer was read): it probes no more."""
        if self._probe == ticket:
            self._probe = None

    def refused(self, retry_after: float, now: float) -> None:
        """A 429: nobody sends before ``now + retry_after``, and the pace slows down."""
        self._blocked_until = max(self._blocked_until, now + retry_after)
        self._next_at = max(self._next_at, self._blocked_until)
        self._slowdown = min(4.0, self._slowdown * 1.25)
        self._remaining = 0.0
