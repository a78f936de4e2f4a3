"""The real ``serve`` process exports one trace per call over OTLP/HTTP, configured by OTEL_* alone."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver import tracing
from tests.integration.harness import (
    build_kallglot_body,
    sign_kallglot_headers,
    start_server,
    stop_server,
    wait_for,
)


class Collector:
    """An OTLP/HTTP trace endpoint on loopback that decodes what it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []

    def app(self) -> Starlette:
        async def traces(request: Request) -> Response:
            body = await request.body()
            if request.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            export = ExportTraceServiceRequest()
            export.ParseFromString(body)
            for resource_spans in export.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            {"name": span.name, "trace_id": int.from_bytes(span.trace_id, "big"), **resource}
                        )
            return Response(
                ExportTraceServiceRequest().SerializeToString(), media_type="application/x-protobuf"
            )

        return Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])

    def names(self, trace_id: int) -> list[str]:
        return sorted(s["name"] for s in self.spans if s["trace_id"] == trace_id)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serve_exports_each_calls_spans_to_the_otlp_endpoint_named_by_the_environment(
    tmp_path: Path,
) -> None:
    collector = Collector()
    server, url = await start_server(collector.app())
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s instead of 5 s
        "RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/receiver.db",
        "RECEIVER_LOG_LEVEL": "WARNING",
    }
    env.pop("RECEIVER_CONFIG_FILE", None)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "receiver.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "receiver", "serve", "--sandbox", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=log,
    )
    try:
        async with httpx.AsyncClient(timeout=10) as client:

            async def ready() -> bool:
                assert process.poll() is None, (tmp_path / "receiver.log").read_text()[-2000:]
                try:
                    return (await client.get(f"{base}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(ready, timeout=60, what="the receiver to be ready")
            body = build_kallglot_body("session.ended", "sess_otlp1")
            answer = await client.post(
                f"{base}/webhooks/kallglot", content=body, headers=sign_kallglot_headers(body)
            )
        assert answer.status_code == 200, answer.text

        trace_id, _ = tracing.call_ids("sess_otlp1")
        await wait_for(
            lambda: "call.delivery" in collector.names(trace_id), timeout=30, what="the delivery span"
        )
        names = collector.names(trace_id)
        assert "call.start" in names
        assert "call.intake" in names
        assert any("POST" in name for name in names), names  # httpx client span: POST .../analysis
        assert {s["service.name"] for s in collector.spans} == {"kallglot-receiver"}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
        await stop_server(server)
