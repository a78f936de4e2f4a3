"""The Kallglot API client: the only module that knows Kallglot's URLs and error codes.

Answers come back as typed values (``StartedAnalysis``, ``Analysis``, ``SessionInfo``), read from
Kallglot's JSON in ``receiver.kallglot_answers`` alone; handlers get the raw documents through
``HandlerReader``. Every value and every error carries Kallglot's ``X-Request-ID`` (``request_id``).

Errors are the tree of ``receiver.kallglot_errors`` (re-exported here), where ``classify`` and
``next_attempt`` decide, without I/O, what an answer means and when to try again.

Every response updates the credit and rate-limit gauges and the one rate budget
(``receiver.pacing.Budget`` behind ``receiver.throttle.Throttle``) that every request waits on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from receiver import jsonsafe, kallglot_answers
from receiver.kallglot_answers import Analysis, SessionInfo, StartedAnalysis
from receiver.kallglot_errors import (
    MAX_RETRY_AFTER_SECONDS,
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
from receiver.metrics import Metrics
from receiver.pacing import Budget, RateLimit, parse_rate_limit
from receiver.throttle import Priority, Throttle

__all__ = [
    "MAX_RETRY_AFTER_SECONDS",
    "HandlerReader",
    "KallglotClient",
    "KallglotError",
    "NotFound",
    "RateLimited",
    "Rejected",
    "Retryable",
    "StartingPaused",
    "Unavailable",
]

log = logging.getLogger("receiver.kallglot")

Sleep = Callable[[float], Awaitable[None]]


def _header_number(headers: httpx.Headers, name: str) -> float | None:
    try:
        return float(headers[name]) if name in headers else None
    except ValueError:
        return None


class KallglotClient:
    """Async client over one ``httpx.AsyncClient`` (the transport is the test seam)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        metrics: Metrics,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Sleep | None = None,
        user_agent: str = "kallglot-receiver",
        rate_share: float = 1.0,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": user_agent},
            timeout=httpx.Timeout(timeout),
            transport=transport,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )
        self._metrics = metrics
        self._clock = clock
        self._sleep: Sleep = sleep or asyncio.sleep
        # One budget for every request: Kallglot counts all /v1 routes against one limit.
        self.throttle = Throttle(Budget(share=rate_share), clock)
        #: The last ``X-API-Credits-Remaining`` seen, None until a response told us.
        self.credits_remaining: float | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    def blocked_until(self) -> float:
        """Until when a 429 told us not to start analyses."""
        return self.throttle.budget.blocked_until

    def _no_answer(self, ticket: int) -> None:
        self.throttle.budget.lost(ticket)
        self.throttle.answered()

    def _observe(self, response: httpx.Response, ticket: int, sent_at: float, now: float) -> RateLimit | None:
        """Feed an answer's rate-limit and credit headers to the budget, the gauges and
        ``credits_remaining``; a 429 is answered to the throttle later, once its wait is known."""
        rate = parse_rate_limit(response.headers, now)
        self.throttle.budget.observe(rate, ticket, sent_at, now)
        if response.status_code != 429:
            self.throttle.answered()
        remaining = _header_number(response.headers, "x-api-credits-remaining")
        if remaining is not None:
            self.credits_remaining = remaining
        self._metrics.observe_kallglot(
            remaining, _header_number(response.headers, "x-api-credits-used"), rate
        )
        return rate

    async def _request(
        self,
        operation: str,
        group: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        ticket = await self.throttle.acquire(Priority.START if group == "start" else Priority.OTHER)
        sent_at = self._clock()
        started = time.perf_counter()
        try:
            response = await self._http.request(method, path, json=json, headers=headers)
        except httpx.TimeoutException as exc:
            self._no_answer(ticket)
            self._metrics.kallglot_request(operation, "timeout", time.perf_counter() - started)
            raise Unavailable(operation, "timed out") from exc
        except httpx.HTTPError as exc:
            self._no_answer(ticket)
            self._metrics.kallglot_request(operation, "error", time.perf_counter() - started)
            raise Unavailable(operation, f"{type(exc).__name__}") from exc
        except BaseException:
            self._no_answer(ticket)
            raise
        self._metrics.kallglot_request(operation, str(response.status_code), time.perf_counter() - started)
        _log_response(operation, response)
        now = self._clock()
        rate = self._observe(response, ticket, sent_at, now)
        status = response.status_code
        if status < 400:
            return response
        code, message, body_retry = error_body(response.content, response.reason_phrase)
        error = classify(status, code) or Unavailable  # never None: the answer is an error
        retry_after = next_attempt(
            status,
            retry_after=response.headers.get("retry-after"),
            body_retry_after=body_retry,
            reset_at=rate.reset_at if rate is not None else None,
            now=now,
        )
        if error is RateLimited:
            assert retry_after is not None  # a 429 always has a wait
            self.throttle.budget.refused(retry_after, now)
            self.throttle.answered()
        raise error(
            operation,
            message,
            status=status,
            code=code,
            retry_after=retry_after,
            request_id=_request_id(response),
        )

    @staticmethod
    def _json(operation: str, response: httpx.Response) -> dict[str, Any]:
        try:
            # Cleaned like inbound events: this result is stored and handed to every handler.
            data = jsonsafe.loads(response.content, strict=False)
        except jsonsafe.UnsafeJSON:
            raise Unavailable(
                operation,
                "answered with a body that is not JSON",
                status=response.status_code,
                request_id=_request_id(response),
            ) from None
        if not isinstance(data, dict):
            raise Unavailable(
                operation,
                "answered with a body that is not an object",
                status=response.status_code,
                request_id=_request_id(response),
            )
        return data

    async def start_analysis(
        self, session_id: str, *, profile: str, include: Sequence[str], idempotency_key: str
    ) -> StartedAnalysis:
        """``POST /sessions/{id}/analysis`` (1 credit, once per key)."""
        response = await self._request(
            "start_analysis",
            "start",
            "POST",
            f"sessions/{quote(session_id, safe='')}/analysis",
            json={"profile": profile, "include": list(include)},
            headers={"Idempotency-Key": idempotency_key},
        )
        request_id = _request_id(response)
        started = kallglot_answers.analysis(self._json("start_analysis", response), request_id=request_id)
        if not started.id:
            raise Unavailable(
                "start_analysis",
                "answered without an analysis id",
                status=response.status_code,
                request_id=request_id,
            )
        return StartedAnalysis(id=started.id, analysis=started, request_id=request_id)

    async def get_analysis(self, analysis_id: str) -> Analysis:
        """``GET /analyses/{id}``; ids of the OLD API (``ana_…``) fall back to ``GET /analysis/{id}``."""
        path = quote(analysis_id, safe="")
        try:
            response = await self._request("get_analysis", "read", "GET", f"analyses/{path}")
        except NotFound:
            if not analysis_id.startswith("ana_"):
                raise
            response = await self._request("get_analysis", "read", "GET", f"analysis/{path}")
        return kallglot_answers.analysis(
            self._json("get_analysis", response), request_id=_request_id(response)
        )

    async def end_session(self, session_id: str, *, idempotency_key: str) -> SessionInfo:
        """``POST /sessions/{id}/end`` (idempotent at Kallglot)."""
        response = await self._request(
            "end_session",
            "end",
            "POST",
            f"sessions/{quote(session_id, safe='')}/end",
            headers={"Idempotency-Key": idempotency_key},
        )
        return kallglot_answers.session(self._json("end_session", response), request_id=_request_id(response))

    async def get_session(self, session_id: str) -> SessionInfo:
        response = await self._request("get_session", "read", "GET", f"sessions/{quote(session_id, safe='')}")
        return kallglot_answers.session(self._json("get_session", response), request_id=_request_id(response))

    async def get_transcript(self, session_id: str) -> dict[str, Any]:
        response = await self._request(
            "get_transcript", "read", "GET", f"sessions/{quote(session_id, safe='')}/transcript"
        )
        return self._json("get_transcript", response)


class HandlerReader:
    """The ``KallglotReader`` handed to handlers: Kallglot's documents as they are (the handler API)."""

    def __init__(self, client: KallglotClient) -> None:
        self._client = client

    async def get_session(self, session_id: str) -> dict[str, Any]:
        return (await self._client.get_session(session_id)).document

    async def get_transcript(self, session_id: str) -> dict[str, Any]:
        return await self._client.get_transcript(session_id)


def _request_id(response: httpx.Response) -> str | None:
    value: str | None = response.headers.get("x-request-id")
    return value


def _log_response(operation: str, response: httpx.Response) -> None:
    """Every answer with Kallglot's X-Request-ID, the id their support asks for."""
    log.log(
        logging.INFO if response.status_code < 400 else logging.WARNING,
        "kallglot.response",
        extra={
            "operation": operation,
            "status": response.status_code,
            "request_id": _request_id(response),
        },
    )
