"""Generated requests (schemathesis, from receiver/openapi.yaml) against a live ``serve`` on both stores.

Bodies of the signed endpoints are signed by ``_signed`` (Kallglot-Signature and Standard Webhooks)
so that generated events get past verification and reach parsing and storage. For every operation
and both generation modes (valid and invalid input): no 5xx other than a documented 503, every
status code and body conforms to the document, and every 4xx carries the JSON error body.
``SCHEMATHESIS_MAX_EXAMPLES`` (default 25) bounds the examples per operation and mode.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from receiver.carriers import dev, telnyx
from receiver.commands.sandbox import DEV_ADMIN_TOKEN, DEV_INBOUND_SECRET
from receiver.openapi import document
from receiver.sandbox import DEV_WEBHOOK_SECRET
from receiver.signing import sign_kallglot, sign_standard_webhooks
from tests.api.live import Live
from tests.api.served import NOT_YET_SERVED, described
from tests.pg import clone_database, run_sync, with_database

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25"))
SCHEMA = schemathesis.openapi.from_dict(document())
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
OPERATIONS = sorted(
    (listener, method, path)
    for listener in ("public", "admin")
    for method, path in described(listener)
    if (method, path) not in NOT_YET_SERVED
)


def _has_input(method: str, path: str) -> bool:
    """Whether the operation takes anything that can be invalid (else only valid requests exist)."""
    operation = document()["paths"][path][method.lower()]
    return bool(operation.get("parameters") or operation.get("requestBody"))


CASES = [
    pytest.param(*op, mode, id=f"{' '.join(op)} {name}")
    for op in OPERATIONS
    for mode, name in ((GenerationMode.POSITIVE, "valid"), (GenerationMode.NEGATIVE, "invalid"))
    if mode == GenerationMode.POSITIVE or _has_input(op[1], op[2])
]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp(f"live-{request.param}")
    if request.param == "sqlite":
        database = f"sqlite:///{root}/receiver.db"
    else:
        url: str = request.getfixturevalue("postgres_url")
        template: str = request.getfixturevalue("postgres_template")
        database = with_database(url, run_sync(clone_database(url, template)))
    server = Live(database, root)
    yield server
    server.stop()
    assert server.process.returncode == 0, server.log.read_text()[-2000:]


def _telnyx(body: bytes, now: int) -> dict[str, str]:
    return telnyx.sign(dev.telnyx_private_key(dev.DEV_TELNYX_PRIVATE_KEY), now, body)


def _signed(case: Any, base_url: str = "") -> dict[str, Any]:
    """Request arguments that sign the generated body as the endpoint's sender would."""
    if case.path == "/events/twilio" and isinstance(case.body, dict):
        params = {str(k): str(v) for k, v in case.body.items()}
        query = urlencode(case.query or {})
        url = f"{base_url}{case.path}" + (f"?{query}" if query else "")
        body, headers = dev.twilio_request(url, params)
        return {"data": body, "headers": headers}
    if isinstance(case.body, NotSet) or case.media_type != "application/json":
        return {}
    if isinstance(case.body, bytes):  # invalid mode may send raw bytes as the JSON body
        body = case.body
    else:
        try:
            body = json.dumps(case.body).encode()
        except TypeError:  # bytes nested in the generated value: sent as schemathesis encodes it, unsigned
            return {}
    now = int(time.time())
    if case.path == "/webhooks/kallglot":
        return {"data": body, "headers": {"Kallglot-Signature": sign_kallglot(DEV_WEBHOOK_SECRET, now, body)}}
    if case.path == "/events/telnyx":
        return {"data": body, "headers": {"Content-Type": "application/json", **_telnyx(body, now)}}
    if case.path == "/events/call-ended":
        headers = sign_standard_webhooks(DEV_INBOUND_SECRET, f"msg_{uuid.uuid4().hex}", now, body)
        return {"data": body, "headers": headers}
    return {"data": body}


def test_the_admin_listener_serves_the_document_in_the_repository(live: Live) -> None:
    served = httpx.get(f"{live.urls['admin']}/openapi.json")

    assert served.status_code == 200
    assert served.json() == document()


@pytest.mark.parametrize(("listener", "method", "path", "mode"), CASES)
def test_generated_requests_get_documented_answers_and_never_a_server_error(
    live: Live, listener: str, method: str, path: str, mode: GenerationMode
) -> None:
    operation = SCHEMA[path][method]
    session = requests.Session()
    answered: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        kwargs = _signed(case, live.urls[listener]) if listener == "public" else {}
        headers = kwargs.pop("headers", {})
        if listener == "admin":
            headers["Authorization"] = f"Bearer {DEV_ADMIN_TOKEN}"
        response = case.call_and_validate(
            base_url=live.urls[listener], session=session, headers=headers, checks=CHECKS, **kwargs
        )
        answered.append(response.status_code)
        if 400 <= response.status_code < 500:
            error = response.json()["error"]
            assert isinstance(error["code"], str)
            assert error["code"]
            assert isinstance(error["message"], str)

    try:
        run()
    finally:
        session.close()
    assert answered, "no request was sent"
    if method == "POST" and listener == "public":
        # the signing hook works: generated events get past verification to parsing and storage
        assert set(answered) - {401}, answered
    if method == "POST" and listener == "public" and mode == GenerationMode.POSITIVE:
        assert 200 in answered, answered
    assert all(status < 500 or status == 503 for status in answered)
