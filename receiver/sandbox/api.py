"""The emulated Kallglot ``/v1`` routes: auth, rate limit, injected faults, then the use case."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import data, errors
from .errors import ApiError
from .port import SandboxPort

Result = tuple[int, dict[str, Any]]


class AnalysisRequest(BaseModel):
    """The NEW request body of ``POST /v1/sessions/{id}/analysis``."""

    model_config = ConfigDict(extra="ignore")

    profile: str = "default"
    include: list[data.Include] = Field(default_factory=lambda: list(data.INCLUDE_VALUES))


class Delay:
    """``response_delay_seconds``, paid once per request wherever the route chooses to pay it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def once(self) -> None:
        seconds, self.seconds = self.seconds, 0.0
        if seconds > 0:
            await asyncio.sleep(seconds)


Operation = Callable[[SandboxPort, Request, Delay], Awaitable[Result]]


def _api_key(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key")


def endpoint(sandbox: SandboxPort, name: str, handler: Operation, *, analysis_post: bool = False) -> Any:
    """Wrap a use case in what every authenticated Kallglot response goes through."""

    async def run(request: Request) -> Response:
        state, cfg = sandbox.state, sandbox.config
        request_id = state.new_id("req_")
        headers = {"X-Request-ID": request_id}
        delay = Delay(cfg.response_delay_seconds)
        authenticated = False
        if analysis_post:
            state.analysis_posts += 1
        try:
            state.authenticate(_api_key(request))
            authenticated = True
            quota = state.admit(analysis_post=analysis_post)
            headers |= quota.headers()
            if not quota.allowed:
                raise errors.rate_limited(quota.retry_after)
            if state.chance(cfg.error_rate):
                raise errors.server_error(state.rng.choice((500, 503)))
            status, body = await handler(sandbox, request, delay)
        except ApiError as exc:
            status, body = exc.status, exc.body(request_id)
            if exc.retry_after is not None:
                headers["Retry-After"] = str(exc.retry_after)
        await delay.once()
        if authenticated:
            headers |= state.credit_headers()
        state.count(name, status)
        return JSONResponse(body, status, headers)

    return run


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise errors.invalid_request("The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise errors.invalid_request("The request body must be a JSON object.")
    return payload


async def create_analysis(sandbox: SandboxPort, request: Request, delay: Delay) -> Result:
    state = sandbox.state
    session_id = request.path_params["id"]
    payload = await _json_body(request)
    try:
        parsed = AnalysisRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"][:1]) or None
        raise errors.invalid_request(f"Invalid request: {first['msg']}", param=param, status=422) from None
    include = tuple(dict.fromkeys(parsed.include))
    key = request.headers.get("idempotency-key")
    if key:
        fingerprint = f"{session_id}\n{json.dumps(payload, sort_keys=True, separators=(',', ':'))}"
        replay = state.idempotency.begin(key, fingerprint, state.clock())
        if replay is not None:
            return replay.status, replay.body
    try:
        # the delay sits inside the claimed key, so a concurrent retry really sees "still processing"
        await delay.once()
        analysis = state.start_analysis(session_id, parsed.profile, include)
    except BaseException:
        if key:
            state.idempotency.release(key)
        raise
    body = state.render_created(analysis)
    if key:
        state.idempotency.finish(key, 202, body)
    sandbox.analysis_started(analysis)
    if state.chance(sandbox.config.error_after_effect_rate):
        raise errors.server_error(500)
    return 202, body


async def get_analysis(sandbox: SandboxPort, request: Request, delay: Delay) -> Result:
    state = sandbox.state
    return 200, state.render(state.analysis(request.path_params["id"]))


async def get_session(sandbox: SandboxPort, request: Request, delay: Delay) -> Result:
    session_id = request.path_params["id"]
    return 200, data.session_object(
        session_id, sandbox.state.session(session_id), sandbox.provider(session_id)
    )


async def get_transcript(sandbox: SandboxPort, request: Request, delay: Delay) -> Result:
    state, session_id = sandbox.state, request.path_params["id"]
    ended_at = state.session(session_id)
    ready = state.clock() >= state.transcript_ready_at(session_id)
    return 200, data.transcript_object(session_id, ended_at, ready=ready)


async def end_session(sandbox: SandboxPort, request: Request, delay: Delay) -> Result:
    session_id = request.path_params["id"]
    return 200, data.end_summary(session_id, sandbox.state.session(session_id))


def routes(sandbox: SandboxPort) -> list[Route]:
    def route(path: str, method: str, handler: Operation, route_name: str, **kw: bool) -> Route:
        run = endpoint(sandbox, f"{method} {path}", handler, **kw)
        return Route(path, run, methods=[method], name=route_name)

    return [
        route("/v1/sessions/{id}/analysis", "POST", create_analysis, "create_analysis", analysis_post=True),
        route("/v1/analyses/{id}", "GET", get_analysis, "get_analysis"),
        route("/v1/analysis/{id}", "GET", get_analysis, "get_analysis_old"),
        route("/v1/sessions/{id}", "GET", get_session, "get_session"),
        route("/v1/sessions/{id}/transcript", "GET", get_transcript, "get_transcript"),
        route("/v1/sessions/{id}/end", "POST", end_session, "end_session"),
    ]
