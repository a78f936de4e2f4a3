"""The OpenAPI 3.1 description of both listeners, kept as ``openapi.yaml`` beside this module.

The document is data, not generated from the routes: it is the contract (CONTRACT.md §4 and §9),
validated by a test and exercised against a live server by schemathesis.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import Response

from receiver.version import VERSION


@cache
def document() -> dict[str, Any]:
    """The parsed OpenAPI document (read once from the package)."""
    loaded: dict[str, Any] = yaml.safe_load(files("receiver").joinpath("openapi.yaml").read_text("utf-8"))
    loaded["info"]["version"] = VERSION  # the package's, whatever the file says
    return loaded


@cache
def _encoded() -> bytes:
    return json.dumps(document(), separators=(",", ":")).encode()


async def openapi_json(request: Request) -> Response:
    return Response(_encoded(), media_type="application/json")
