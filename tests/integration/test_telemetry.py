"""Traces, metrics, logs and Sentry seen from outside a real running receiver (both stores)."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import sentry_sdk
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver import tracing
from receiver.observability import JsonFormatter, configure_sentry
from receiver.version import package_version
from tests.integration.conftest import StackFactory
from tests.integration.harness import metric_value, start_server, stop_server, wait_for


class JsonLines(logging.Handler):
    """Formats each record when it is emitted, inside the span that was current then."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure("test", exporter)
    yield exporter
    tracing.shutdown()


@pytest.fixture
def json_logs() -> Iterator[JsonLines]:
    logger = logging.getLogger("receiver")
    handler, level = JsonLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_one_call_is_one_trace_across_intake_start_and_every_delivery(
    make_stack: StackFactory, spans: InMemorySpanExporter, json_logs: JsonLines
) -> None:
    stack = await make_stack()
    await stack.session_ended("sess_trace1")
    await stack.wait_state("sess_trace1", "delivered")

    trace_id, _ = tracing.call_ids("sess_trace1")
    mine = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    names = sorted(s.name for s in mine)
    assert names.count("call.intake") == 2  # session.ended, then analysis.completed
    assert names.count("call.start") == 1
    assert names.count("call.delivery") == 2  # files and sink
    client = [s for s in mine if s.kind.name == "CLIENT"]
    urls = {str(s.attributes.get("url.full") or s.attributes.get("http.url")) for s in client}
    assert any("/v1/sessions/sess_trace1/analysis" in url for url in urls), urls
    assert any(url.endswith("/hook") for url in urls), urls
    # W3C trace context on the outgoing webhook: the destination joins the call's trace.
    [headers] = stack.sink.headers
    assert headers["traceparent"].split("-")[1] == f"{trace_id:032x}"
    started = [line for line in json_logs.lines if line["event"] == "analysis.started"]
    assert started
    assert started[0]["trace_id"] == f"{trace_id:032x}"
    [start_call] = [
        line
        for line in json_logs.lines
        if line["event"] == "kallglot.response" and line["operation"] == "start_analysis"
    ]
    assert start_call["request_id"].startswith("req_")  # Kallglot's X-Request-ID, for their support
    assert start_call["trace_id"] == f"{trace_id:032x}"


async def test_polls_of_a_call_whose_webhook_never_came_join_its_trace(
    make_stack: StackFactory, spans: InMemorySpanExporter
) -> None:
    stack = await make_stack(sandbox={"webhook_drop_rate": 1.0})
    await stack.session_ended("sess_trace_poll1")
    view = await stack.wait_state("sess_trace_poll1", "delivered")
    assert view["finished_via"] == "poll"

    trace_id, _ = tracing.call_ids("sess_trace_poll1")
    follows = [
        s for s in spans.get_finished_spans() if s.name == "call.follow" and s.context.trace_id == trace_id
    ]
    assert follows
    polled = [
        s
        for s in spans.get_finished_spans()
        if s.kind.name == "CLIENT"
        and s.parent is not None
        and s.parent.span_id == follows[-1].context.span_id
    ]
    assert polled, "the poll's GET /analyses/{id} has no client span under call.follow"


def test_a_call_has_the_same_trace_id_in_every_process_and_different_calls_do_not_share_it() -> None:
    assert tracing.call_ids("sess_a") == tracing.call_ids("sess_a")
    assert tracing.call_ids("sess_a")[0] != tracing.call_ids("sess_b")[0]


def test_tracing_stays_off_without_the_otel_variables() -> None:
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert tracing.log_fields() == {}


async def test_metrics_carry_build_info_process_collectors_and_request_durations_by_route(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    await stack.session_ended("sess_metrics1")
    await stack.wait_state("sess_metrics1", "delivered")
    assert (await stack.http.get(f"{stack.url}/no/such/path/12345")).status_code == 404

    text = await stack.metrics()

    assert metric_value(text, "receiver_build_info", version=package_version()) == 1
    assert metric_value(text, "process_cpu_seconds_total") > 0
    assert "python_info{" in text
    assert (
        metric_value(
            text,
            "receiver_http_request_duration_seconds_count",
            method="POST",
            route="/webhooks/kallglot",
            status="2xx",
        )
        >= 2  # session.ended and analysis.completed
    )
    assert (
        metric_value(text, "receiver_http_request_duration_seconds_count", route="unmatched", status="4xx")
        == 1
    )
    assert "/no/such/path" not in text


class FakeSentry:
    """A Sentry ingestion endpoint on loopback: keeps every envelope's items."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def app(self) -> Starlette:
        async def envelope(request: Request) -> Response:
            body = await request.body()
            if request.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            lines = body.split(b"\n")
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                if json.loads(header).get("type") == "event":
                    self.items.append(json.loads(payload))
            return JSONResponse({})

        return Starlette(routes=[Route("/api/{project}/envelope/", envelope, methods=["POST"])])

    def messages(self) -> list[str]:
        return [
            str((item.get("logentry") or {}).get("message") or item.get("message")) for item in self.items
        ]


@pytest.fixture
async def sentry() -> AsyncIterator[FakeSentry]:
    fake = FakeSentry()
    server, url = await start_server(fake.app())
    host = url.removeprefix("http://")
    configure_sentry(f"http://public@{host}/1", "test")
    yield fake
    sentry_sdk.get_client().close(timeout=2)
    sentry_sdk.get_global_scope().set_client(None)
    await stop_server(server)


async def test_a_handler_outage_is_one_sentry_event_not_one_per_dead_letter(
    make_stack: StackFactory, sentry: FakeSentry
) -> None:
    stack = await make_stack(
        handlers=[
            {
                "name": "sink",
                "type": "webhook",
                "url": "http://127.0.0.1:1/hook",  # nothing listens on port 1: every attempt fails
                "retry": {"max_attempts": 1},
                "circuit": {"failure_threshold": 2, "open_seconds": 60},
            }
        ]
    )
    for n in range(4):
        await stack.session_ended(f"sess_outage{n}")

    async def all_dead() -> bool:
        text = await stack.metrics()
        return metric_value(text, "receiver_deliveries_total", handler="sink", outcome="dead_lettered") >= 2

    await wait_for(all_dead, timeout=20, what="dead letters")
    sentry_sdk.flush(timeout=5)
    await wait_for(lambda: sentry.items, what="a Sentry event")
    text = await stack.metrics()
    assert metric_value(text, "receiver_handler_circuit_open", handler="sink") == 1
    outages = [m for m in sentry.messages() if "outage" in m]
    assert outages == ["handler sink outage: circuit opened after repeated delivery failures"]
    assert not [m for m in sentry.messages() if "dead_lettered" in m]
    assert sentry.items[0]["release"] == f"kallglot-receiver@{package_version()}"
