"""Kallglot's error tree and the pure decisions on one answer: which error it is, when to try again.

Errors (each carries ``operation``, ``status``, ``code`` and a message without secrets)::

    KallglotError
     ├── Unavailable           5xx, timeouts, connection errors: retry with backoff
     ├── RateLimited           429: retry after ``retry_after`` (the budget blocks everyone until then)
     ├── Retryable             409 idempotency_conflict, 425, transcript not ready: retry with backoff
     ├── StartingPaused        402 insufficient_api_credits, 403 organization_inactive, 401: keep calls
     │                         queued, pause starting, resume by itself
     ├── NotFound              404: the call fails with a reason
     └── Rejected              any other 4xx: the call fails with a reason

``classify`` and ``next_attempt`` do no I/O; ``receiver.kallglot`` applies them to each response.
"""

from __future__ import annotations

from receiver import jsonsafe
from receiver.pacing import parse_retry_after

#: The longest wait any answer may impose (a 429 ``Retry-After``, a body ``retry_after``): far below
#: the ~24 h for which Kallglot keeps an Idempotency-Key, so a retried start is always recognised.
MAX_RETRY_AFTER_SECONDS = 3600.0
#: The wait after a 429 that said nothing about when to come back.
RATE_LIMITED_DEFAULT_SECONDS = 30.0


class KallglotError(Exception):
    def __init__(
        self,
        operation: str,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.status = status
        self.code = code
        self.retry_after = retry_after
        #: Kallglot's ``X-Request-ID`` of the answer, the id their support asks for.
        self.request_id = request_id

    @property
    def reason(self) -> str:
        status = f"HTTP {self.status}" if self.status else "no response"
        code = f" {self.code}" if self.code else ""
        return f"Kallglot {self.operation}: {status}{code}: {self}"


class Unavailable(KallglotError):
    pass


class RateLimited(KallglotError):
    pass


class Retryable(KallglotError):
    pass


class StartingPaused(KallglotError):
    pass


class NotFound(KallglotError):
    pass


class Rejected(KallglotError):
    pass


_PAUSING_403_CODES = (None, "organization_inactive", "organization_suspended")


def classify(status: int, code: str | None) -> type[KallglotError] | None:
    """The error an answer with this status and error ``code`` becomes; None for a success."""
    if status < 400:
        return None
    if status == 429:
        return RateLimited
    if status >= 500:
        return Unavailable
    if status in (401, 402) or (status == 403 and code in _PAUSING_403_CODES):
        return StartingPaused
    if status == 404:
        return NotFound
    if status in (409, 425) or "transcript" in (code or ""):
        return Retryable
    return Rejected


def capped(seconds: float | None) -> float | None:
    """A wait Kallglot asked for, within [0, MAX_RETRY_AFTER_SECONDS] (NaN: none)."""
    if seconds is None or seconds != seconds:
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS)


def next_attempt(
    status: int,
    *,
    retry_after: str | None,
    body_retry_after: float | None,
    reset_at: float | None,
    now: float,
) -> float | None:
    """Seconds until the next attempt an error answer asks for (None: the caller's own backoff).

    A 429 always has one: the ``Retry-After`` header, else the body's ``retry_after``, else the
    rate-limit window's reset, else ``RATE_LIMITED_DEFAULT_SECONDS``. Any other error has the
    header's (when it is not zero) or the body's, when given. Every wait is capped.
    """
    header = parse_retry_after(retry_after, now)
    if status != 429:
        return capped(header or body_retry_after)
    wait = header
    if wait is None:
        wait = body_retry_after
    if wait is None and reset_at is not None:
        wait = max(0.0, reset_at - now)
    bounded = capped(wait)
    return RATE_LIMITED_DEFAULT_SECONDS if bounded is None else bounded


def error_body(content: bytes, reason_phrase: str) -> tuple[str | None, str, float | None]:
    """``(code, message, retry_after)`` from Kallglot's ``{"error": {...}}`` body, as far as it has them."""
    try:
        data = jsonsafe.loads(content, strict=False)
    except jsonsafe.UnsafeJSON:
        return None, reason_phrase or "error", None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, reason_phrase or "error", None
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else ""
    retry_after = error.get("retry_after")
    return code, str(message)[:300], float(retry_after) if isinstance(retry_after, int | float) else None
