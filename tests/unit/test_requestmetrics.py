"""The request histogram's route label is the route template, bounded whatever the client sends."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Mount, Route

from receiver.requestmetrics import route_template


async def _ok(request: Any) -> Response:
    return Response()


APP = Starlette(
    routes=[
        Route("/webhooks/kallglot", _ok, methods=["POST"]),
        Route("/admin/calls/{session_id}", _ok, methods=["GET"]),
        Mount("/sandbox", app=Starlette()),
    ]
)


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("POST", "/webhooks/kallglot", "/webhooks/kallglot"),
        ("GET", "/admin/calls/sess_123", "/admin/calls/{session_id}"),
        ("GET", "/webhooks/kallglot", "/webhooks/kallglot"),  # a 405 still names its route
        ("GET", "/sandbox/v1/sessions/x", "/sandbox/*"),
        ("GET", "/wp-login.php", "unmatched"),
    ],
    ids=["exact", "path-parameter", "wrong-method", "mount", "scan"],
)
def test_route_template(method: str, path: str, template: str) -> None:
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "app": APP}
    assert route_template(scope) == template


async def _other(request: Any) -> Response:
    return Response(status_code=204)


@pytest.mark.parametrize(
    ("method", "path", "labels"),
    [
        ("GET", "/sandbox/v1/sessions/x", ("GET", "/sandbox/*", "2xx")),  # first, before the others
        ("POST", "/webhooks/kallglot", ("POST", "/webhooks/kallglot", "2xx")),
        ("GET", "/admin/calls/sess_1", ("GET", "/admin/calls/{session_id}", "2xx")),
        ("GET", "/webhooks/kallglot", ("GET", "/webhooks/kallglot", "4xx")),
        ("GET", "/healthz", ("GET", "/healthz", "2xx")),  # one endpoint, one route: the shortcut
        ("GET", "/livez", ("GET", "/livez", "2xx")),
        ("GET", "/wp-login.php", ("GET", "unmatched", "4xx")),
    ],
)
async def test_the_middleware_labels_each_request_with_its_route(
    method: str, path: str, labels: tuple[str, str, str]
) -> None:
    """Through the middleware, twice (the second time from its caches), an endpoint shared by two
    routes (``_ok``) still gets each route's own template."""
    import httpx
    from prometheus_client import CollectorRegistry, Histogram
    from starlette.middleware import Middleware

    from receiver.requestmetrics import RequestMetrics

    registry = CollectorRegistry()
    histogram = Histogram("d", "d", ["method", "route", "status"], registry=registry)
    app = Starlette(
        routes=[
            Route("/webhooks/kallglot", _ok, methods=["POST"]),
            Route("/admin/calls/{session_id}", _ok, methods=["GET"]),
            Route("/healthz", _other),
            Route("/livez", _ok),
            Mount("/sandbox", app=Starlette(routes=[Route("/v1/sessions/{id}", _other)])),
        ],
        middleware=[Middleware(RequestMetrics)],
    )
    app.state.runtime = type("Runtime", (), {"metrics": type("M", (), {"http_duration": histogram})()})()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        await client.get("/sandbox/v1/sessions/first")  # a mount first: it must not skew the cache
        for _ in range(2):
            await client.request(method, path)
    names = dict(zip(("method", "route", "status"), labels, strict=True))
    expected = 3 if labels[1] == "/sandbox/*" else 2
    assert registry.get_sample_value("d_count", names) == expected
