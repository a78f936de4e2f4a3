"""The Kallglot API errors the sandbox answers, each a value carrying its HTTP status and body.

``ApiError`` is raised by the pure state and the routes alike; ``app`` turns it into the NEW
error body ``{"error": {"type", "code", "message", "request_id", "retry_after"?}}`` in one place.
"""

from __future__ import annotations

import math
from typing import Any


class ApiError(Exception):
    """A documented Kallglot error response."""

    def __init__(
        self,
        status: int,
        type_: str,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.type = type_
        self.code = code
        self.message = message
        self.retry_after = None if retry_after is None else max(1, math.ceil(retry_after))
        self.param = param

    def body(self, request_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "request_id": request_id,
        }
        if self.param is not None:
            error["param"] = self.param
        if self.retry_after is not None:
            error["retry_after"] = self.retry_after
        return {"error": error}


def not_found(what: str) -> ApiError:
    return ApiError(404, "invalid_request_error", "not_found", f"No such {what}.")


def invalid_api_key() -> ApiError:
    return ApiError(401, "authentication_error", "invalid_api_key", "Invalid API key provided.")


def rate_limited(retry_after: float) -> ApiError:
    seconds = max(1, math.ceil(retry_after))
    return ApiError(
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
        f"Too many requests. Please retry after {seconds} seconds.",
        retry_after=seconds,
    )


def insufficient_credits() -> ApiError:
    return ApiError(
        402,
        "permission_error",
        "insufficient_api_credits",
        "API credits exhausted. Purchase more credits to continue.",
    )


def organization_inactive() -> ApiError:
    return ApiError(
        403,
        "permission_error",
        "organization_inactive",
        "The organization's subscription is not active.",
    )


def idempotency_mismatch() -> ApiError:
    return ApiError(
        400,
        "invalid_request_error",
        "idempotency_mismatch",
        "Keys for idempotent requests can only be used with the same parameters they were first used with.",
    )


def idempotency_conflict(retry_after: float) -> ApiError:
    return ApiError(
        409,
        "invalid_request_error",
        "idempotency_conflict",
        "A request with the same Idempotency-Key is still being processed.",
        retry_after=retry_after,
    )


def transcript_not_ready(retry_after: float) -> ApiError:
    return ApiError(
        409,
        "invalid_request_error",
        "transcript_not_ready",
        "The session transcript is not available yet.",
        retry_after=retry_after,
    )


def invalid_request(message: str, *, param: str | None = None, status: int = 400) -> ApiError:
    code = "invalid_request" if status == 400 else "validation_error"
    return ApiError(status, "invalid_request_error", code, message, param=param)


def server_error(status: int) -> ApiError:
    if status == 503:
        return ApiError(503, "api_error", "service_unavailable", "Temporary outage.", retry_after=1)
    return ApiError(status, "api_error", "internal_error", "An internal error occurred.")
