"""Event-bus output end to end: one ended call through the real pipeline (both stores) reaches a
CloudEvents webhook and a NATS JetStream stream exactly once, configured as an operator would."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import JetStreamContext

from tests.fakes.debug_logs import debug_logs  # noqa: F401  (autouse: the whole run logs at DEBUG)
from tests.integration.conftest import StackFactory
from tests.integration.harness import SINK_SECRET, Sink, start_server, stop_server

FAST_RETRY = {"initial_seconds": 0.05, "max_seconds": 0.2, "horizon_seconds": 60}


@pytest.fixture
async def stream(nats_url: str) -> AsyncIterator[tuple[JetStreamContext, str, str]]:
    """``(jetstream, stream name, subject prefix)``: a stream of this test's own."""
    client = await nats.connect(nats_url, connect_timeout=5)
    js = client.jetstream(timeout=5)
    tag = uuid.uuid4().hex[:12]
    name, prefix = f"E2E_{tag}", f"e2e{tag}"
    await js.add_stream(name=name, subjects=[f"{prefix}.>"])
    try:
        yield js, name, prefix
    finally:
        await js.delete_stream(name)
        await client.close()


@pytest.fixture
async def bus_sink() -> AsyncIterator[tuple[Sink, str]]:
    sink = Sink()
    server, url = await start_server(sink.app())
    try:
        yield sink, url
    finally:
        await stop_server(server)


async def test_an_analysed_call_reaches_the_cloudevents_webhook_and_the_stream_once(
    make_stack: StackFactory,
    stream: tuple[JetStreamContext, str, str],
    bus_sink: tuple[Sink, str],
    nats_url: str,
) -> None:
    js, name, prefix = stream
    sink, sink_url = bus_sink
    stack = await make_stack(
        handlers=[
            {
                "name": "bus",
                "type": "nats",
                "servers": [nats_url],
                "subject": prefix + ".call.{status}.{session_id}",
                "retry": FAST_RETRY,
            },
            {
                "name": "knative",
                "type": "webhook",
                "url": f"{sink_url}/hook",
                "secret": SINK_SECRET,
                "format": "cloudevents",
                "source": "/kallglot-receiver/test",
                "retry": FAST_RETRY,
            },
        ]
    )

    assert (await stack.session_ended("sess_bus_e2e")).status_code == 200
    view = await stack.wait_state("sess_bus_e2e", "delivered", timeout=20)

    ids = {d["handler"]: d["id"] for d in view["deliveries"]}
    assert {d["handler"]: d["state"] for d in view["deliveries"]} == {
        "bus": "delivered",
        "knative": "delivered",
    }
    stored = await js.get_last_msg(name, f"{prefix}.call.completed.sess_bus_e2e")
    assert stored.headers is not None
    assert stored.headers["Nats-Msg-Id"] == ids["bus"]
    document = json.loads(stored.data or b"")
    assert document["session_id"] == "sess_bus_e2e"
    assert (await js.stream_info(name)).state.messages == 1

    [received] = sink.received
    [headers] = sink.headers
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-id"] == ids["knative"]
    assert headers["ce-type"] == "com.kallglot.call.analysis.completed"
    assert headers["ce-subject"] == "sess_bus_e2e"
    assert headers["ce-source"] == "/kallglot-receiver/test"
    assert headers["webhook-id"] == ids["knative"]
    assert {**received, "id": None} == {**document, "id": None}
    assert stack.charged("sess_bus_e2e") == 1
