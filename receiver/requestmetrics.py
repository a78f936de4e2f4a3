"""ASGI middleware: ``receiver_http_request_duration_seconds`` by route template and status class.

The route label is the matched route's path template (``/admin/calls/{session_id}``), never the
raw path, so a scan of random URLs adds one ``unmatched`` series instead of one per URL.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._templates: dict[Any, str] | None = None  # endpoint -> template, built on first use
        self._series: dict[tuple[Any, str, str, str], Any] = {}  # one histogram child per label set

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        app = scope.get("app")  # a mounted Starlette app replaces scope["app"] with itself
        root_path = scope.get("root_path", "")  # and any Mount extends root_path
        status = 500  # what the client gets if the app raises before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics = _metrics(app)
            if metrics is not None:
                series = self._series_for(metrics, scope, app, root_path, status)
                series.observe(time.perf_counter() - started)

    def _series_for(self, metrics: Any, scope: Scope, app: Any, root_path: str, status: int) -> Any:
        """The series of a request to ``app`` (mounted at ``root_path``) that ended in ``status``."""
        if self._templates is None:
            self._templates = unique_endpoint_templates(app)
        # The endpoint the router left names the route only when it is one of the app's own.
        mounted = scope.get("root_path", "") != root_path
        template = None if mounted else self._templates.get(scope.get("endpoint"))
        if template is None:  # match again, on the scope as this app saw it before a mount rewrote it
            template = route_template({**scope, "app": app, "root_path": root_path})
        method = scope["method"] if scope["method"] in _METHODS else "other"
        key = (metrics, method, template, f"{status // 100}xx")
        series = self._series.get(key)
        if series is None:  # bounded: templates x methods x status classes
            series = self._series[key] = metrics.http_duration.labels(*key[1:])
        return series


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _metrics(app: Any) -> Any:
    runtime = getattr(getattr(app, "state", None), "runtime", None)
    return getattr(runtime, "metrics", None)


def unique_endpoint_templates(app: Any) -> dict[Any, str]:
    """Template by endpoint, for the endpoints that serve one route of ``app``: after a request
    the router has left its endpoint in the scope, so the label needs no second match."""
    routes = [r for r in getattr(app, "routes", ()) if getattr(r, "endpoint", None)]
    counts = Counter(route.endpoint for route in routes)
    return {route.endpoint: _template(route) for route in routes if counts[route.endpoint] == 1}


def route_template(scope: Scope) -> str:
    """The path template of the route that matches ``scope``; ``unmatched`` when none does."""
    partial = None
    for route in getattr(scope.get("app"), "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return _template(route)
        if match is Match.PARTIAL and partial is None:
            partial = route  # the path matched, the method did not (a 405)
    return _template(partial) if partial is not None else "unmatched"


def _template(route: Any) -> str:
    if isinstance(route, Mount):
        return f"{route.path}/*"
    return str(getattr(route, "path", "unmatched"))
