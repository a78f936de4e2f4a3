"""The shared HTTP plumbing: one classification of answers, one translation of transport errors."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from handlers import _http
from receiver.delivery import PermanentDeliveryError, RateLimitedError, TransientDeliveryError
from tests.fakes import serve

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, _http.Verdict.DELIVERED),
        (201, _http.Verdict.DELIVERED),
        (204, _http.Verdict.DELIVERED),
        (299, _http.Verdict.DELIVERED),
        (301, _http.Verdict.GIVE_UP),
        (400, _http.Verdict.GIVE_UP),
        (401, _http.Verdict.GIVE_UP),
        (404, _http.Verdict.GIVE_UP),
        (408, _http.Verdict.RETRY),
        (410, _http.Verdict.GIVE_UP),
        (425, _http.Verdict.RETRY),
        (429, _http.Verdict.RATE_LIMITED),
        (500, _http.Verdict.RETRY),
        (502, _http.Verdict.RETRY),
        (503, _http.Verdict.RETRY),
        (599, _http.Verdict.RETRY),
    ],
    ids=str,
)
def test_verdict_of_each_status(status: int, expected: _http.Verdict) -> None:
    assert _http.verdict(status) is expected


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after", "reason"),
    [
        (429, {"Retry-After": "7"}, RateLimitedError, 7.0, "the endpoint answered 429"),
        (
            429,
            {"Retry-After": format_datetime(datetime.fromtimestamp(NOW + 120, UTC), usegmt=True)},
            RateLimitedError,
            120.0,
            "the endpoint answered 429",
        ),
        (429, {}, RateLimitedError, None, "the endpoint answered 429"),
        (503, {"Retry-After": "30"}, TransientDeliveryError, 30.0, "the endpoint answered 503"),
        (503, {"Retry-After": "soon"}, TransientDeliveryError, None, "the endpoint answered 503"),
        (408, {}, TransientDeliveryError, None, "the endpoint answered 408"),
        (
            410,
            {"Retry-After": "5"},
            PermanentDeliveryError,
            None,
            "answered 410; fix the endpoint, then replay",
        ),
        (400, {}, PermanentDeliveryError, None, "the endpoint answered 400"),
    ],
    ids=["429-seconds", "429-http-date", "429-bare", "503-seconds", "503-garbage", "408", "410", "400"],
)
def test_classify_builds_one_error_of_the_tree(
    status: int, headers: dict[str, str], error: type[Exception], retry_after: float | None, reason: str
) -> None:
    failure = _http.classify(httpx.Response(status, headers=headers), "the endpoint", NOW)
    assert type(failure) is error
    assert failure is not None
    assert failure.retry_after == (pytest.approx(retry_after) if retry_after is not None else None)
    assert reason in failure.reason


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_a_2xx_answer_is_no_error(status: int) -> None:
    assert _http.classify(httpx.Response(status), "x", NOW) is None


def test_a_delivered_verdict_is_not_an_error() -> None:
    with pytest.raises(ValueError, match="not an error"):
        _http.error(_http.Verdict.DELIVERED, "ok")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, None),
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"Retry-After": "3.5"}, 3.5),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "999999999"}, 86400.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00"}, None),
    ],
    ids=["none", "empty", "seconds", "title-case", "negative", "nan", "capped", "date-without-zone"],
)
def test_retry_after_reads_what_pacing_accepts(
    headers: dict[str, str] | None, expected: float | None
) -> None:
    assert _http.retry_after(headers, NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("10000", 10000.0), ("0", 0.0), ("-1", None), ("x", None), ("nan", None)],
)
def test_seconds_from_a_header(value: str | None, expected: float | None) -> None:
    assert _http.seconds(value) == expected


async def test_a_timeout_is_transient_and_names_the_destination_not_the_url() -> None:
    release = asyncio.Event()

    async def slow(request: Request) -> Response:
        await release.wait()
        return Response("late")

    async with serve(Starlette(routes=[Route("/", slow)])) as url:
        async with httpx.AsyncClient(timeout=0.2) as client:
            with pytest.raises(TransientDeliveryError) as caught:
                await _http.send(client, "GET", f"{url}/?token=secret-value", who="the endpoint")
        release.set()
    assert caught.value.reason == "the endpoint timed out (ReadTimeout)"


async def test_a_refused_connection_is_transient() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with httpx.AsyncClient(timeout=2) as client:
        with pytest.raises(TransientDeliveryError, match=r"^could not reach HubSpot \(ConnectError\)$"):
            await _http.send(client, "GET", f"http://127.0.0.1:{port}/", who="HubSpot")


def test_json_object_tolerates_anything() -> None:
    assert _http.json_object(httpx.Response(200, content=b"not json")) == {}
    assert _http.json_object(httpx.Response(200, json=[1, 2])) == {}
    assert _http.json_object(httpx.Response(200, json={"a": 1})) == {"a": 1}
