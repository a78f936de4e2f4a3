"""HubSpot's request pacing: spread requests to a rate, and wait out a spent rate-limit window."""

from __future__ import annotations

import asyncio

import httpx

from handlers import _http
from receiver.delivery import HandlerContext

DEFAULT_RETRY_AFTER = 10.0  # HubSpot's private-app limits are per 10-second window


class Pacer:
    """Spread requests to ``rate`` per second and hold off when HubSpot says the window is spent."""

    def __init__(self, rate: float, context: HandlerContext) -> None:
        self._rate = rate
        self._burst = max(1.0, min(rate, 10.0))
        self._tokens = self._burst
        self._clock = context.clock
        self._sleep = context.sleep
        self._last = context.clock()
        self._hold_until = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = self._clock()
            if self._hold_until > now:
                await self._sleep(self._hold_until - now)
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens < 1:
                await self._sleep((1 - self._tokens) / self._rate)
                self._tokens = 1.0
                self._last = self._clock()
            self._tokens -= 1

    def now(self) -> float:
        return self._clock()

    def observe(self, headers: httpx.Headers) -> None:
        """``X-HubSpot-RateLimit-Remaining: 0`` -> wait out the window before the next request."""
        remaining = _http.seconds(headers.get("x-hubspot-ratelimit-remaining"))
        secondly = _http.seconds(headers.get("x-hubspot-ratelimit-secondly-remaining"))
        wait = 0.0
        if remaining is not None and remaining < 1:
            interval = _http.seconds(headers.get("x-hubspot-ratelimit-interval-milliseconds"))
            wait = min((interval or 10_000.0) / 1000, DEFAULT_RETRY_AFTER)
        elif secondly is not None and secondly < 1:
            wait = 1.0
        if wait:
            self._hold_until = max(self._hold_until, self._clock() + wait)
