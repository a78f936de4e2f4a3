"""HTTP plumbing of the HTTP handlers: send with a timeout, translate httpx errors, classify answers.

Every HTTP destination (``webhook``, ``hubspot``, ``salesforce``; ``slack`` and ``s3`` for
``Retry-After``) goes through here, so a timeout, a refused connection, a 429 or a 503 mean the same
thing everywhere::

    2xx                      delivered
    429                      RateLimitedError       (Retry-After: seconds or an HTTP date, via pacing)
    408, 425, 5xx            TransientDeliveryError (Retry-After honoured when given)
    any other status         PermanentDeliveryError
    timeout / no connection  TransientDeliveryError

A handler whose API says more (HubSpot's policy names, Salesforce's error codes) reads the
``Verdict`` and builds its own reason; the decision itself stays here, table-tested.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import httpx

from receiver.delivery import (
    DeliveryError,
    PermanentDeliveryError,
    RateLimitedError,
    TransientDeliveryError,
)
from receiver.pacing import parse_retry_after


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RATE_LIMITED = "rate_limited"
    RETRY = "retry"
    GIVE_UP = "give_up"


_RETRYABLE = frozenset({408, 425})
_ERRORS: dict[Verdict, type[DeliveryError]] = {
    Verdict.RATE_LIMITED: RateLimitedError,
    Verdict.RETRY: TransientDeliveryError,
    Verdict.GIVE_UP: PermanentDeliveryError,
}


def verdict(status: int) -> Verdict:
    """What an HTTP status means for a delivery."""
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status == 429:
        return Verdict.RATE_LIMITED
    if status >= 500 or status in _RETRYABLE:
        return Verdict.RETRY
    return Verdict.GIVE_UP


def error(kind: Verdict, reason: str, *, retry_after: float | None = None) -> DeliveryError:
    """The delivery error for a failed ``kind`` (never call with DELIVERED)."""
    if kind is Verdict.DELIVERED:
        raise ValueError("a delivered answer is not an error")
    return _ERRORS[kind](reason, retry_after=retry_after)


def retry_after(headers: Mapping[str, Any] | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), else None."""
    if not headers:
        return None
    value = headers.get("retry-after")
    if value is None:
        value = headers.get("Retry-After")
    return parse_retry_after(value if isinstance(value, str) else None, now)


def classify(response: httpx.Response, who: str, now: float) -> DeliveryError | None:
    """``None`` for 2xx, else the error named by ``who`` ("the endpoint", "HubSpot") with its status."""
    kind = verdict(response.status_code)
    if kind is Verdict.DELIVERED:
        return None
    wait = retry_after(response.headers, now)
    status = response.status_code
    if kind is Verdict.GIVE_UP:
        return error(kind, f"{who} answered {status}; fix {who}, then replay")
    return error(kind, f"{who} answered {status}", retry_after=wait)


async def send(
    client: httpx.AsyncClient, method: str, url: str, *, who: str, **kwargs: Any
) -> httpx.Response:
    """One request; httpx's own errors become TransientDeliveryError naming ``who`` (never the URL,
    which may carry credentials). The client's timeout applies."""
    try:
        return await client.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise TransientDeliveryError(f"{who} timed out ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise TransientDeliveryError(f"could not reach {who} ({type(exc).__name__})") from exc


def json_object(response: httpx.Response) -> Mapping[str, Any]:
    """The answer's JSON object, or ``{}`` when it is not one."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, Mapping) else {}


def mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def text(value: object) -> str | None:
    """A non-empty string or integer as stripped text; anything else (bools too) as None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int):
        stripped = str(value).strip()
        return stripped or None
    return None


def seconds(value: str | None) -> float | None:
    """A non-negative number of seconds from a header value, else None."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number >= 0 and number == number else None
