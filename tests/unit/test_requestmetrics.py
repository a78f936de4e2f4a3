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
