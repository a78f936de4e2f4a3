"""A fake Slack: enough of the Web API (``chat.postMessage``, ``auth.test``) and incoming webhooks.

It answers the way Slack does: Web API errors are HTTP 200 with ``{"ok": false, "error": …}``
(except 429 and 5xx); incoming webhooks answer ``ok`` as text, or the error code as text with
the status code Slack uses for it. Tests queue scripted answers and read what was received.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

# The status codes Slack documents for incoming-webhook errors.
WEBHOOK_ERROR_STATUS = {
    "invalid_payload": 400,
    "no_service_id": 400,
    "no_team": 400,
    "too_many_attachments": 400,
    "invalid_token": 403,
    "action_prohibited": 403,
    "posting_to_general_channel_denied": 403,
    "no_service": 404,
    "channel_not_found": 404,
    "team_disabled": 404,
    "user_not_found": 404,
    "channel_is_archived": 410,
    "rollup_error": 500,
}

TOKEN = "xoxb-fake-token"
HOOK_PATH = "/services/T000/B000/secretpart"
CHANNELS = frozenset({"C0CALLS", "#calls"})


@dataclass(frozen=True)
class Scripted:
    """One canned answer: ``status``, and ``error`` (Slack's code) or a raw ``body``."""

    status: int = 200
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None


@dataclass(frozen=True)
class Received:
    kind: str  # "api" or "webhook"
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class SlackFake:
    """State and app of the fake; ``api_script`` / ``hook_script`` are consumed in order."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.api_script: deque[Scripted] = deque()
        self.hook_script: deque[Scripted] = deque()
        self.app = Starlette(
            routes=[
                Route("/api/{method}", self._api, methods=["POST"]),
                Route("/services/{rest:path}", self._webhook, methods=["POST"]),
            ]
        )

    def fail_api(
        self, error: str | None = None, *, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        self.api_script.append(Scripted(status=status, error=error, headers=headers or {}))

    def fail_hook(
        self, error: str, *, status: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        code = status or WEBHOOK_ERROR_STATUS.get(error, 400)
        self.hook_script.append(Scripted(status=code, error=error, headers=headers or {}))

    def messages(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [r.body for r in self.received if kind is None or r.kind == kind]

    @staticmethod
    async def _body(request: Request) -> dict[str, Any]:
        raw = (await request.body()).decode()
        if request.headers.get("content-type", "").startswith("application/json"):
            loaded = json.loads(raw or "{}")
            return loaded if isinstance(loaded, dict) else {"_": loaded}
        form = dict(parse_qsl(raw))
        for key in ("blocks", "attachments"):
            if key in form:
                form[key] = json.loads(form[key])
        return form

    async def _api(self, request: Request) -> Response:
        method = request.path_params["method"]
        body = await self._body(request)
        self.received.append(Received("api", method, dict(request.headers), body))
        if self.api_script:
            scripted = self.api_script.popleft()
            if scripted.status >= 500:
                return PlainTextResponse(
                    scripted.body or "<html>oops</html>", scripted.status, scripted.headers
                )
            return JSONResponse({"ok": False, "error": scripted.error}, scripted.status, scripted.headers)
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else body.get("token")
        if not token:
            return JSONResponse({"ok": False, "error": "not_authed"})
        if token != TOKEN:
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        if method == "auth.test":
            return JSONResponse(
                {"ok": True, "team": "Fake", "user": "bot", "team_id": "T000", "user_id": "U000"}
            )
        if method == "chat.postMessage":
            if body.get("channel") not in CHANNELS:
                return JSONResponse({"ok": False, "error": "channel_not_found"})
            if not body.get("text") and not body.get("blocks"):
                return JSONResponse({"ok": False, "error": "no_text"})
            ts = f"1700000000.{len(self.received):06d}"
            return JSONResponse({"ok": True, "channel": body["channel"], "ts": ts})
        return JSONResponse({"ok": False, "error": "unknown_method"})

    async def _webhook(self, request: Request) -> Response:
        body = await self._body(request)
        self.received.append(Received("webhook", request.url.path, dict(request.headers), body))
        if self.hook_script:
            scripted = self.hook_script.popleft()
            return PlainTextResponse(scripted.body or scripted.error or "", scripted.status, scripted.headers)
        if request.url.path != HOOK_PATH:
            return PlainTextResponse("no_service", 404)
        if not body.get("text") and not body.get("blocks"):
            return PlainTextResponse("invalid_payload", 400)
        return PlainTextResponse("ok", 200)
