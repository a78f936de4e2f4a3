"""The ``/_sandbox`` helper routes (no auth): end a call, read stats, read or change knobs, reset."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from . import data, errors
from .errors import ApiError
from .port import SandboxPort


def _reply(sandbox: SandboxPort, body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status, {"X-Request-ID": sandbox.state.new_id("req_")})


def _error(sandbox: SandboxPort, exc: ApiError) -> JSONResponse:
    request_id = sandbox.state.new_id("req_")
    return JSONResponse(exc.body(request_id), exc.status, {"X-Request-ID": request_id})


def routes(sandbox: SandboxPort) -> list[Route]:
    async def end_call(request: Request) -> JSONResponse:
        session_id = request.path_params["id"]
        try:
            session = sandbox.end_call(session_id)
        except ApiError as exc:
            return _error(sandbox, exc)
        body = {
            "session": session,
            "session_url": str(request.url_for("get_session", id=session_id)),
            "webhook_url": sandbox.config.webhook_url,
            "events": ["session.ended", "transcript.ready"] if sandbox.config.webhook_url else [],
        }
        return _reply(sandbox, body)

    async def stats(request: Request) -> JSONResponse:
        return _reply(sandbox, sandbox.stats())

    async def get_config(request: Request) -> JSONResponse:
        return _reply(sandbox, sandbox.config.model_dump())

    async def patch_config(request: Request) -> JSONResponse:
        try:
            patch = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return _error(sandbox, errors.invalid_request("The request body is not valid JSON."))
        if not isinstance(patch, dict):
            return _error(sandbox, errors.invalid_request("The request body must be a JSON object."))
        try:
            sandbox.update_config(patch)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"]) or None
            message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return _error(sandbox, errors.invalid_request(message, param=param, status=422))
        return _reply(sandbox, sandbox.config.model_dump())

    async def reset(request: Request) -> JSONResponse:
        sandbox.reset()
        return _reply(sandbox, sandbox.stats())

    async def info(request: Request) -> JSONResponse:
        base = str(request.url_for("get_session", id="sess_x")).removesuffix("/sessions/sess_x")
        return _reply(
            sandbox,
            {
                "api_url": base,
                "api_key": sandbox.config.api_key or "any sk_test_… or sk_live_… key",
                "webhook_url": sandbox.config.webhook_url,
                "end_call": str(request.url_for("end_call", id="sess_demo1")),
                "now": data.iso(sandbox.state.clock()),
            },
        )

    return [
        Route("/_sandbox", info, methods=["GET"], name="sandbox_info"),
        Route("/_sandbox/sessions/{id}/end-call", end_call, methods=["POST"], name="end_call"),
        Route("/_sandbox/stats", stats, methods=["GET"], name="sandbox_stats"),
        Route("/_sandbox/config", get_config, methods=["GET"], name="sandbox_config"),
        Route("/_sandbox/config", patch_config, methods=["PATCH"], name="sandbox_config_patch"),
        Route("/_sandbox/reset", reset, methods=["POST"], name="sandbox_reset"),
    ]
