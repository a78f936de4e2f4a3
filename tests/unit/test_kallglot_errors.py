"""What one Kallglot answer means (``classify``) and when to try again (``next_attempt``): tables."""

from __future__ import annotations

import pytest

from receiver.kallglot_errors import (
    MAX_RETRY_AFTER_SECONDS,
    RATE_LIMITED_DEFAULT_SECONDS,
    KallglotError,
    NotFound,
    RateLimited,
    Rejected,
    Retryable,
    StartingPaused,
    Unavailable,
    classify,
    error_body,
    next_attempt,
)

NOW = 1_711_454_400.0  # 2024-03-26T12:00:00Z


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        pytest.param(200, None, None, id="200-success"),
        pytest.param(201, None, None, id="201-success"),
        pytest.param(302, None, None, id="3xx-success"),
        pytest.param(429, None, RateLimited, id="429-rate-limited"),
        pytest.param(429, "rate_limit_exceeded", RateLimited, id="429-with-code"),
        pytest.param(500, None, Unavailable, id="500-unavailable"),
        pytest.param(503, "maintenance", Unavailable, id="503-unavailable"),
        pytest.param(401, None, StartingPaused, id="401-paused"),
        pytest.param(402, "insufficient_api_credits", StartingPaused, id="402-paused"),
        pytest.param(402, "anything", StartingPaused, id="402-any-code-paused"),
        pytest.param(403, None, StartingPaused, id="403-no-code-paused"),
        pytest.param(403, "organization_inactive", StartingPaused, id="403-inactive-paused"),
        pytest.param(403, "organization_suspended", StartingPaused, id="403-suspended-paused"),
        pytest.param(403, "forbidden_profile", Rejected, id="403-other-code-rejected"),
        pytest.param(403, "transcript_not_ready", Retryable, id="403-transcript-retryable"),
        pytest.param(404, None, NotFound, id="404-not-found"),
        pytest.param(404, "transcript_not_ready", NotFound, id="404-transcript-still-not-found"),
        pytest.param(409, "idempotency_conflict", Retryable, id="409-retryable"),
        pytest.param(425, None, Retryable, id="425-retryable"),
        pytest.param(422, "transcript_not_ready", Retryable, id="422-transcript-retryable"),
        pytest.param(400, "invalid_request", Rejected, id="400-rejected"),
        pytest.param(422, None, Rejected, id="422-rejected"),
    ],
)
def test_classify(status: int, code: str | None, expected: type[KallglotError] | None) -> None:
    assert classify(status, code) is expected


@pytest.mark.parametrize(
    ("status", "header", "body", "reset_at", "expected"),
    [
        pytest.param(429, "12", None, None, 12.0, id="429-header"),
        pytest.param(429, "Tue, 26 Mar 2024 12:00:30 GMT", None, None, 30.0, id="429-http-date"),
        pytest.param(429, "12", 5.0, NOW + 40, 12.0, id="429-header-wins"),
        pytest.param(429, "0", 5.0, None, 0.0, id="429-zero-header-is-an-answer"),
        pytest.param(429, None, 5.0, NOW + 40, 5.0, id="429-body-before-reset"),
        pytest.param(429, "soon", 5.0, None, 5.0, id="429-unreadable-header-body"),
        pytest.param(429, None, None, NOW + 40, 40.0, id="429-window-reset"),
        pytest.param(429, None, None, NOW - 10, 0.0, id="429-reset-in-the-past"),
        pytest.param(429, None, None, None, RATE_LIMITED_DEFAULT_SECONDS, id="429-nothing-said"),
        pytest.param(429, None, float("nan"), None, RATE_LIMITED_DEFAULT_SECONDS, id="429-nan-body"),
        pytest.param(429, None, 10 * 86400.0, None, MAX_RETRY_AFTER_SECONDS, id="429-capped"),
        pytest.param(429, None, -3.0, None, 0.0, id="429-negative-body"),
        pytest.param(503, "7", None, NOW + 40, 7.0, id="503-header"),
        pytest.param(503, None, 4.0, None, 4.0, id="503-body"),
        pytest.param(503, "0", 4.0, None, 4.0, id="503-zero-header-falls-to-body"),
        pytest.param(503, None, None, NOW + 40, None, id="503-no-wait-ignores-reset"),
        pytest.param(409, "99999999", None, None, MAX_RETRY_AFTER_SECONDS, id="409-capped"),
        pytest.param(402, None, None, None, None, id="402-own-backoff"),
    ],
)
def test_next_attempt(
    status: int, header: str | None, body: float | None, reset_at: float | None, expected: float | None
) -> None:
    wait = next_attempt(status, retry_after=header, body_retry_after=body, reset_at=reset_at, now=NOW)
    assert wait == expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            b'{"error": {"code": "insufficient_api_credits", "message": "no credits", "retry_after": 60}}',
            ("insufficient_api_credits", "no credits", 60.0),
            id="full",
        ),
        pytest.param(b'{"error": {"code": 7, "message": null}}', (None, "", None), id="wrong-types"),
        pytest.param(b'{"error": "boom"}', (None, "Reason", None), id="error-not-an-object"),
        pytest.param(b"<html>502</html>", (None, "Reason", None), id="not-json"),
        pytest.param(b'{"error": {"message": "' + b"x" * 400 + b'"}}', (None, "x" * 300, None), id="long"),
    ],
)
def test_error_body(content: bytes, expected: tuple[str | None, str, float | None]) -> None:
    assert error_body(content, "Reason") == expected


def test_an_empty_reason_phrase_still_names_an_error() -> None:
    assert error_body(b"", "") == (None, "error", None)
