"""The ``webhook`` handler against a real receiving server: plain JSON and CloudEvents 1.0."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pydantic
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_binary, from_structured
from cloudevents.core.formats.json import JSONFormat
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from handlers import webhook
from receiver.delivery import (
    Delivery,
    HandlerContext,
    PermanentDeliveryError,
    RateLimitedError,
    TransientDeliveryError,
)
from receiver.signing import verify_standard_webhooks
from tests.fakes import serve

SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"  # base64 of 27 bytes
MakeDelivery = Callable[..., Delivery]


@dataclass
class Endpoint:
    """Records every request; answers with the queued statuses, then 204."""

    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    async def hook(self, request: Request) -> Response:
        self.received.append((dict(request.headers), await request.body()))
        status, headers = self.answers.pop(0) if self.answers else (204, {})
        return Response(status_code=status, headers=headers)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.hook, methods=["POST", "OPTIONS"])])


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    sink = Endpoint()
    async with serve(sink.app()) as url:
        sink.url = f"{url}/hook"
        yield sink


@pytest.fixture
async def make_handler(
    endpoint: Endpoint, context: HandlerContext
) -> AsyncIterator[Callable[..., webhook.WebhookHandler]]:
    built: list[webhook.WebhookHandler] = []

    def make(**options: Any) -> webhook.WebhookHandler:
        values = {"name": "bus", "type": "webhook", "url": endpoint.url, **options}
        handler = webhook.build(webhook.Options.model_validate(values), context)
        built.append(handler)
        return handler

    yield make
    for handler in built:
        await handler.aclose()


def _verify(headers: dict[str, str], body: bytes, now: float) -> str:
    return verify_standard_webhooks(headers, body, [SECRET], tolerance_seconds=300, now=now)


# -- plain JSON ------------------------------------------------------------------------------------


async def test_plain_json_is_the_document_signed_with_the_delivery_id(
    endpoint: Endpoint, make_handler: Any, make_delivery: MakeDelivery, clock: Any
) -> None:
    item = make_delivery()
    await make_handler(secret=SECRET).deliver(item)

    [(headers, body)] = endpoint.received
    assert json.loads(body) == item.document
    assert headers["content-type"] == "application/json"
    assert _verify(headers, body, clock()) == item.id
    assert not any(name.startswith("ce-") for name in headers)


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after"),
    [
        (429, {"Retry-After": "12"}, RateLimitedError, 12.0),
        (503, {}, TransientDeliveryError, None),
        (425, {}, TransientDeliveryError, None),
        (410, {}, PermanentDeliveryError, None),
        (400, {}, PermanentDeliveryError, None),
    ],
    ids=["429", "503", "425", "410", "400"],
)
async def test_answers_are_classified(
    endpoint: Endpoint,
    make_handler: Any,
    make_delivery: MakeDelivery,
    status: int,
    headers: dict[str, str],
    error: type[Exception],
    retry_after: float | None,
) -> None:
    endpoint.answers.append((status, headers))
    with pytest.raises(error) as caught:
        await make_handler(format="cloudevents").deliver(make_delivery())
    assert type(caught.value) is error
    assert getattr(caught.value, "retry_after", None) == retry_after


# -- CloudEvents -----------------------------------------------------------------------------------


async def test_binary_mode_puts_the_attributes_in_ce_headers_and_the_document_in_the_body(
    endpoint: Endpoint, make_handler: Any, make_delivery: MakeDelivery, clock: Any
) -> None:
    item = make_delivery()
    await make_handler(format="cloudevents", secret=SECRET).deliver(item)

    [(headers, body)] = endpoint.received
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-type"] == "com.kallglot.call.analysis.completed"
    assert headers["ce-source"] == "/kallglot-receiver"
    assert headers["ce-id"] == item.id
    assert headers["ce-subject"] == item.session_id
    assert headers["ce-time"] == "2026-03-26T23:59:30Z"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == item.document
    assert _verify(headers, body, clock()) == item.id  # still Standard Webhooks signed

    event = from_binary(HTTPMessage(headers, body), JSONFormat())  # what a CloudEvents SDK consumer reads
    assert event.get_id() == item.id
    assert event.get_data() == item.document


async def test_structured_mode_sends_one_envelope(
    endpoint: Endpoint, make_handler: Any, make_delivery: MakeDelivery, make_document: Any, clock: Any
) -> None:
    item = make_delivery(make_document("failed"))
    await make_handler(
        format="cloudevents", mode="structured", source="urn:acme:calls", secret=SECRET
    ).deliver(item)

    [(headers, body)] = endpoint.received
    assert headers["content-type"] == "application/cloudevents+json"
    envelope = json.loads(body)
    assert {
        key: envelope[key] for key in ("specversion", "type", "source", "id", "subject", "datacontenttype")
    } == {
        "specversion": "1.0",
        "type": "com.kallglot.call.analysis.failed",
        "source": "urn:acme:calls",
        "id": item.id,
        "subject": item.session_id,
        "datacontenttype": "application/json",
    }
    assert envelope["time"] == "2026-03-26T23:59:30Z"
    assert envelope["data"] == item.document
    assert _verify(headers, body, clock()) == item.id
    assert from_structured(HTTPMessage(headers, body), JSONFormat()).get_type().endswith(".failed")


async def test_a_retry_sends_the_same_event(
    endpoint: Endpoint, make_handler: Any, make_delivery: MakeDelivery, clock: Any
) -> None:
    handler = make_handler(format="cloudevents", mode="structured")
    endpoint.answers.append((503, {}))
    with pytest.raises(TransientDeliveryError):
        await handler.deliver(make_delivery())
    clock.now += 60
    await handler.deliver(make_delivery(attempt=2))

    first, second = (json.loads(body) for _, body in endpoint.received)
    assert first == second


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "binary"}, "only apply with format: cloudevents"),
        ({"source": "/x"}, "only apply with format: cloudevents"),
        ({"format": "cloudevents", "mode": "batched"}, "mode"),
        ({"format": "cloudevents", "source": "has space"}, "source"),
        ({"format": "cloudevents", "headers": {"Ce-Type": "x"}}, "ce-"),
        ({"format": "xml"}, "format"),
    ],
    ids=["mode-without", "source-without", "bad-mode", "bad-source", "ce-header", "bad-format"],
)
def test_invalid_cloudevents_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        webhook.Options.model_validate(
            {"name": "bus", "type": "webhook", "url": "https://x.test/h", **options}
        )


@pytest.mark.parametrize(
    "created_at",
    [
        datetime(2026, 3, 26, 23, 59, 30),
        datetime(2026, 3, 27, 1, 59, 30, tzinfo=timezone(timedelta(hours=2))),
    ],
    ids=["naive", "offset"],
)
async def test_time_is_always_rfc3339_utc(
    endpoint: Endpoint, make_handler: Any, make_delivery: MakeDelivery, created_at: datetime
) -> None:
    await make_handler(format="cloudevents").deliver(make_delivery(created_at=created_at))
    [(headers, _)] = endpoint.received
    assert headers["ce-time"] == "2026-03-26T23:59:30Z"
