"""What Kallglot returns is cleaned like inbound events: a result we paid for is stored and delivered.

A real server on loopback answers ``GET /v1/analyses/{id}`` and ``GET /v1/sessions/{id}`` with the
values that broke the stores and handlers; the client hands back a value every store takes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.kallglot import KallglotClient, Unavailable
from receiver.metrics import Metrics
from tests.integration.harness import start_server, stop_server

HOSTILE = (
    b'{"id": "anl_1", "status": "completed", "summary": "ok\\u0000 \\udc00", "\\ud800k": 1,'
    b' "sentiment": {"overall": 1e400, "n": NaN, "big": 1' + b"0" * 5000 + b"},"
    b' "performance": {"score": 0.5}, "phone_number": "+14155550100"}'
)
BODIES = {"anl_1": HOSTILE, "sess_1": HOSTILE, "anl_deep": b"[" * 2000 + b"]" * 2000}


async def _answer(request: Request) -> Response:
    return Response(BODIES[request.path_params["id"]], media_type="application/json")


@pytest.fixture
async def client() -> AsyncIterator[KallglotClient]:
    app = Starlette(routes=[Route("/v1/analyses/{id}", _answer), Route("/v1/sessions/{id}", _answer)])
    server, url = await start_server(app)
    kallglot = KallglotClient(f"{url}/v1", "sk_test_answers", metrics=Metrics())
    try:
        yield kallglot
    finally:
        await kallglot.aclose()
        await stop_server(server)


def _assert_storable(value: object) -> None:
    text = json.dumps(value, allow_nan=False)
    text.encode("utf-8")
    assert "\\u0000" not in text


async def test_an_analysis_with_unrepresentable_values_is_cleaned(client: KallglotClient) -> None:
    analysis = (await client.get_analysis("anl_1")).document
    assert analysis["summary"] == "ok \ufffd"
    assert analysis["sentiment"] == {"overall": None, "n": None, "big": None}
    assert analysis["\ufffdk"] == 1
    _assert_storable(analysis)


async def test_a_session_with_unrepresentable_values_is_cleaned(client: KallglotClient) -> None:
    session = (await client.get_session("sess_1")).document
    assert session["phone_number"] == "+14155550100"
    _assert_storable(session)


async def test_an_answer_nested_too_deep_is_unavailable_not_a_crash(client: KallglotClient) -> None:
    with pytest.raises(Unavailable):
        await client.get_analysis("anl_deep")
