"""Which operations of receiver/openapi.yaml each listener serves on this branch.

``NOT_YET_SERVED`` lists operations the contract describes but other branches are still building
(carrier callbacks: ``telephony``). The lead
empties it when those branches are merged; nothing else is left out of the API tests.
"""

from __future__ import annotations

from starlette.routing import Mount, Route

from receiver.carriers.routes import ADMIN_ROUTES as CARRIER_ADMIN_ROUTES
from receiver.carriers.routes import PUBLIC_ROUTES as CARRIER_PUBLIC_ROUTES
from receiver.openapi import document
from receiver.routes import ADMIN_ROUTES, PUBLIC_ROUTES

NOT_YET_SERVED: frozenset[tuple[str, str]] = frozenset({})
LISTENERS = {
    "public": [*PUBLIC_ROUTES, *CARRIER_PUBLIC_ROUTES],
    "admin": [*ADMIN_ROUTES, *CARRIER_ADMIN_ROUTES],
}


def served(listener: str) -> set[tuple[str, str]]:
    """(METHOD, path) pairs the listener's routes answer."""
    out = set()
    for route in LISTENERS[listener]:
        if isinstance(route, Mount):  # the console's pages and assets: described as /admin/console
            continue
        assert isinstance(route, Route)
        out |= {(method, route.path) for method in route.methods or () if method != "HEAD"}
    return out


def described(listener: str) -> set[tuple[str, str]]:
    """(METHOD, path) pairs the document tags with the listener."""
    out = set()
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and listener in operation.get("tags", ()):
                out.add((method.upper(), path))
    return out
