"""The ``nats`` handler against a real NATS server with JetStream (``tests.nats_server``).

Each test creates its own stream over a unique subject and deletes it afterwards, so tests (and
engineers sharing the server) never see each other's messages.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pydantic
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from handlers import nats_jetstream
from receiver.delivery import Delivery, HandlerContext, PermanentDeliveryError, TransientDeliveryError
from receiver.registry import parse_handlers

MakeDelivery = Callable[..., Delivery]


@dataclass
class Bus:
    client: Client
    js: JetStreamContext
    prefix: str  # unique per test: "t<hex>"
    stream: str

    async def messages(self) -> int:
        info = await self.js.stream_info(self.stream)
        return info.state.messages


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    client = await nats.connect(nats_url, connect_timeout=5)
    js = client.jetstream(timeout=5)
    tag = uuid.uuid4().hex[:12]
    stream = f"TEST_{tag}"
    await js.add_stream(name=stream, subjects=[f"t{tag}.>"], duplicate_window=120.0)
    try:
        yield Bus(client, js, f"t{tag}", stream)
    finally:
        await js.delete_stream(stream)
        await client.close()


@pytest.fixture
async def make_handler(
    context: HandlerContext, nats_url: str
) -> AsyncIterator[Callable[..., nats_jetstream.NatsHandler]]:
    built: list[nats_jetstream.NatsHandler] = []

    def make(**options: Any) -> nats_jetstream.NatsHandler:
        values = {"name": "bus", "type": "nats", "servers": [nats_url], **options}
        handler = nats_jetstream.build(nats_jetstream.Options.model_validate(values), context)
        built.append(handler)
        return handler

    yield make
    for handler in built:
        await handler.aclose()


async def test_a_delivery_is_stored_in_the_stream_with_its_id_as_msg_id(
    bus: Bus, make_handler: Any, make_delivery: MakeDelivery
) -> None:
    item = make_delivery()
    handler = make_handler(subject=bus.prefix + ".calls.{status}.{session_id}")

    await handler.deliver(item)

    stored = await bus.js.get_last_msg(bus.stream, f"{bus.prefix}.calls.completed.{item.session_id}")
    assert json.loads(stored.data or b"") == item.document
    assert stored.headers is not None
    assert stored.headers["Nats-Msg-Id"] == item.id
    assert stored.headers["Content-Type"] == "application/json"


async def test_retries_and_replays_store_the_message_once(
    bus: Bus, make_handler: Any, make_delivery: MakeDelivery
) -> None:
    handler = make_handler(subject=bus.prefix + ".calls")
    for attempt in (1, 2, 3):
        await handler.deliver(make_delivery(attempt=attempt))
    await make_handler(subject=bus.prefix + ".calls").deliver(make_delivery(attempt=4))  # a new process

    assert await bus.messages() == 1
    await handler.deliver(make_delivery(id="dlv_other"))
    assert await bus.messages() == 2


async def test_a_failed_analysis_goes_to_its_own_subject(
    bus: Bus, make_handler: Any, make_delivery: MakeDelivery, make_document: Any
) -> None:
    await make_handler(subject=bus.prefix + ".{status}").deliver(make_delivery(make_document("failed")))
    stored = await bus.js.get_last_msg(bus.stream, f"{bus.prefix}.failed")
    assert json.loads(stored.data or b"")["type"] == "call.analysis.failed"


async def test_a_subject_no_stream_captures_is_permanent(
    bus: Bus, make_handler: Any, make_delivery: MakeDelivery
) -> None:
    subject = f"nostream{bus.prefix}.calls"
    with pytest.raises(PermanentDeliveryError, match=f"no JetStream stream captures the subject {subject}"):
        await make_handler(subject=subject).deliver(make_delivery())


async def test_no_ack_in_time_is_transient(bus: Bus, make_handler: Any, make_delivery: MakeDelivery) -> None:
    """A plain subscriber (not JetStream) takes the message and never acks it."""
    subject = f"noack{bus.prefix}.calls"
    received: list[Msg] = []

    async def swallow(msg: Msg) -> None:
        received.append(msg)

    await bus.client.subscribe(subject, cb=swallow)
    await bus.client.flush()
    with pytest.raises(TransientDeliveryError, match="no JetStream ack"):
        await make_handler(subject=subject, timeout_seconds=0.3).deliver(make_delivery())
    assert len(received) == 1  # it did arrive; it just was not stored by JetStream


async def test_an_unreachable_server_is_transient(make_handler: Any, make_delivery: MakeDelivery) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    handler = make_handler(servers=[f"nats://user:pw-secret@127.0.0.1:{port}"], timeout_seconds=1)
    with pytest.raises(TransientDeliveryError, match="cannot reach NATS") as caught:
        await handler.deliver(make_delivery())
    assert "pw-secret" not in caught.value.reason


async def test_an_unreadable_credentials_file_is_permanent(
    make_handler: Any, make_delivery: MakeDelivery, tmp_path: Any
) -> None:
    handler = make_handler(credentials=str(tmp_path / "missing.creds"))
    with pytest.raises(PermanentDeliveryError, match="credentials file cannot be read"):
        await handler.deliver(make_delivery())


async def test_the_connection_is_reopened_after_it_was_closed(
    bus: Bus, make_handler: Any, make_delivery: MakeDelivery
) -> None:
    handler = make_handler(subject=bus.prefix + ".calls")
    await handler.deliver(make_delivery())
    await handler.aclose()
    await handler.deliver(make_delivery(id="dlv_after_close"))
    assert await bus.messages() == 2


async def test_probe_finds_the_stream_or_says_there_is_none(bus: Bus, make_handler: Any) -> None:
    await make_handler(subject=bus.prefix + ".{status}").probe()
    with pytest.raises(PermanentDeliveryError, match="no JetStream stream"):
        await make_handler(subject=f"none{bus.prefix}.x").probe()


def test_the_type_is_registered_by_name() -> None:
    [options] = parse_handlers([{"name": "bus", "type": "nats", "subject": "calls.{session_id}"}])
    assert isinstance(options, nats_jetstream.Options)
    assert options.timeout_seconds == 10.0
    assert options.servers == ("nats://127.0.0.1:4222",)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"subject": "calls.{call_id}"}, "unknown"),
        ({"subject": "calls.*"}, "wildcards"),
        ({"subject": "calls.>"}, "wildcards"),
        ({"subject": "calls..x"}, "dot-separated"),
        ({"subject": "calls x"}, "dot-separated"),
        ({"subject": "calls.{status!r}"}, "format spec"),
        ({"servers": []}, "at least 1"),
        ({"servers": ["http://127.0.0.1:4222"]}, "nats://"),
        ({"token": "  "}, "must not be empty"),
        ({"token": "t0ken-value", "credentials": "/x.creds"}, "not both"),
        ({"timeout_seconds": 0}, "greater than 0"),
    ],
    ids=[
        "unknown-placeholder",
        "star",
        "gt",
        "empty-token",
        "space",
        "conversion",
        "no-servers",
        "http",
        "blank-token",
        "token-and-creds",
        "timeout",
    ],
)
def test_invalid_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        nats_jetstream.Options.model_validate({"name": "bus", "type": "nats", **options})


async def test_the_documented_pull_consumer_reads_each_delivery_once(
    bus: Bus, make_handler: Any, make_delivery: MakeDelivery
) -> None:
    """docs/handlers/nats.md's consumer: a durable pull subscription, fetch, ack."""
    handler = make_handler(subject=bus.prefix + ".call.analysis.{status}")
    await handler.deliver(make_delivery())
    await handler.deliver(make_delivery(attempt=2))  # a retry: deduplicated by the stream
    await handler.deliver(make_delivery(id="dlv_0002", session_id="sess_second"))

    sub = await bus.js.pull_subscribe(f"{bus.prefix}.call.analysis.>", durable="crm-sync", stream=bus.stream)
    msgs = await sub.fetch(batch=10, timeout=2)
    for msg in msgs:
        await msg.ack()

    assert [(msg.headers or {}).get("Nats-Msg-Id") for msg in msgs] == ["dlv_0001", "dlv_0002"]
    assert json.loads(msgs[0].data) == make_delivery().document


@pytest.mark.parametrize(
    ("error", "expected", "reason"),
    [
        (nats.js.errors.NoStreamResponseError(), PermanentDeliveryError, "no JetStream stream captures"),
        (nats.errors.NoRespondersError(), PermanentDeliveryError, "no JetStream stream captures"),
        (
            nats.js.errors.BadRequestError(400, "expected stream does not match", 10060),
            PermanentDeliveryError,
            "400 10060",
        ),
        (
            nats.js.errors.ServiceUnavailableError(503, "JetStream system temporarily unavailable", 10008),
            TransientDeliveryError,
            "503 10008",
        ),
        (nats.js.errors.APIError(429, "too many requests"), TransientDeliveryError, "429"),
        (nats.errors.TimeoutError(), TransientDeliveryError, "no JetStream ack"),
        (nats.errors.ConnectionClosedError(), TransientDeliveryError, "ConnectionClosedError"),
        (nats.errors.MaxPayloadError(), PermanentDeliveryError, "max_payload"),
    ],
    ids=["no-stream", "no-responders", "4xx", "5xx", "429", "timeout", "closed", "too-big"],
)
def test_publish_errors_are_classified(error: Exception, expected: type[Exception], reason: str) -> None:
    classified = nats_jetstream._publish_error(error, "calls.x")
    assert type(classified) is expected
    assert reason in classified.reason


async def test_a_full_stream_that_discards_new_messages_is_retried(
    bus: Bus, make_handler: Any, make_delivery: MakeDelivery
) -> None:
    name, subject = f"FULL_{bus.prefix}", f"full{bus.prefix}.calls"
    await bus.js.add_stream(name=name, subjects=[subject], max_msgs=1, discard="new")
    try:
        handler = make_handler(subject=subject)
        await handler.deliver(make_delivery())
        with pytest.raises(TransientDeliveryError, match="JetStream answered 503"):
            await handler.deliver(make_delivery(id="dlv_no_room"))
    finally:
        await bus.js.delete_stream(name)
