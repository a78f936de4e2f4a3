"""The console's pages and actions; each action is a POST form that redirects back (303) with a
one-line message, so the browser's back button and reload never repeat an action."""

from __future__ import annotations

import hmac
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from receiver import admin_ops
from receiver.admin import delivery_view
from receiver.console import session as sessions
from receiver.lifecycle import CallState, DeliveryState

HERE = Path(__file__).parent
BASE = "/admin/console"
templates = Jinja2Templates(directory=str(HERE / "templates"))
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _token(request: Request) -> str:
    token: str | None = request.app.state.http.admin_token
    if token is None:
        raise HTTPException(404, "set RECEIVER_ADMIN_TOKEN to enable /admin")
    return token


def _secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def _render(request: Request, name: str, session: sessions.Session, **context: Any) -> Response:
    context = {
        "base": BASE,
        "csrf": session.csrf,
        "authenticated": session.authenticated,
        "message": request.query_params.get("msg"),
        **context,
    }
    response = templates.TemplateResponse(request, name, context, status_code=context.pop("status", 200))
    sessions.store(response, session, _token(request), request.url.scheme == "https")
    return _secure(response)


def _redirect(url: str, message: str | None = None) -> Response:
    target = f"{url}?{urlencode({'msg': message})}" if message else url
    return _secure(RedirectResponse(target, status_code=303))


def _session_or_login(request: Request) -> sessions.Session | Response:
    session = sessions.load(request, _token(request))
    if session is None or not session.authenticated:
        return _redirect(f"{BASE}/login")
    return session


async def _form(request: Request) -> tuple[sessions.Session, Any]:
    """The authenticated session and the form of a POST whose CSRF token matches (else 403)."""
    session = sessions.load(request, _token(request))
    form = await request.form(max_files=0, max_fields=50)
    if not sessions.csrf_ok(session, form.get("csrf")) or session is None or not session.authenticated:
        raise HTTPException(403, "the form expired or did not come from this console: reload the page")
    return session, form


def _back(form: Any, default: str) -> str:
    back = form.get("back")
    return back if isinstance(back, str) and back.startswith(f"{BASE}") and "//" not in back else default


# --- log in / out ---------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    session = sessions.load(request, _token(request)) or sessions.new(authenticated=False)
    return _render(request, "login.html", session, page="login")


async def login(request: Request) -> Response:
    token = _token(request)
    session = sessions.load(request, token)
    form = await request.form(max_files=0, max_fields=10)
    if not sessions.csrf_ok(session, form.get("csrf")):
        return _render(
            request, "login.html", sessions.new(False), error="The form expired: try again.", status=403
        )
    given = form.get("token")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
        return _render(
            request, "login.html", sessions.new(False), error="That is not the admin token.", status=401
        )
    response = _redirect(BASE)
    sessions.store(response, sessions.new(authenticated=True), token, request.url.scheme == "https")
    return response


async def logout(request: Request) -> Response:
    await _form(request)
    response = _redirect(f"{BASE}/login")
    sessions.clear(response)
    return response


# --- pages ------------------------------------------------------------------------------------


def _age(seconds: float | None) -> str:
    if not seconds:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


async def overview(request: Request) -> Response:
    session = _session_or_login(request)
    if isinstance(session, Response):
        return session
    http = request.app.state.http
    now = http.clock()
    stats = await http.store.stats(now)
    pending = await http.store.pending_by_handler()
    paused = await http.store.paused_handlers()
    circuits = _circuits(request)
    registry = http.metrics.registry
    credits = registry.get_sample_value("kallglot_api_credits_remaining")
    remaining = registry.get_sample_value("kallglot_api_ratelimit_remaining")
    limit = registry.get_sample_value("kallglot_api_ratelimit_limit")
    ratelimit = f"{limit - remaining:.0f} of {limit:.0f}" if limit and remaining is not None else "-"
    handlers = [
        {
            "name": name,
            "pending": pending.get(name, (0, 0.0))[0],
            "oldest": _age(now - pending[name][1]) if name in pending else "-",
            "dead": stats.dead_letters.get(name, 0),
            "circuit": "open" if circuits.get(name) else "closed",
            "paused": name in paused,
        }
        for name in http.handlers
    ]
    return _render(
        request,
        "overview.html",
        session,
        page="overview",
        states=sorted(stats.calls_by_state.items()),
        stages=[(stage, stats.backlog[stage], _age(stats.oldest.get(stage))) for stage in stats.backlog],
        kallglot={
            "credits": f"{credits:.0f}" if credits is not None else "-",
            "ratelimit": ratelimit,
            "paused": http.gate.paused_until > now,
        },
        handlers=handlers,
    )


def _circuits(request: Request) -> dict[str, bool]:
    runtime = getattr(request.app.state, "runtime", None)
    for loop in getattr(runtime, "loops", []):
        circuits = getattr(loop, "circuits", None)
        if isinstance(circuits, dict):
            return {name: getattr(c, "open_until", None) is not None for name, c in circuits.items()}
    return {}


_FILTER_NAMES = ("session_id", "state", "phone", "handler", "delivery_state", "reason", "since", "until")


async def calls(request: Request) -> Response:
    session = _session_or_login(request)
    if isinstance(session, Response):
        return session
    filters = {k: v for k in _FILTER_NAMES if (v := request.query_params.get(k))}
    cursor = request.query_params.get("cursor")
    error: str | None = None
    page: dict[str, Any] = {"data": [], "next_cursor": None}
    try:
        page = await admin_ops.calls_page(request.app.state.http.store, {**filters, "cursor": cursor})
    except HTTPException as exc:
        error = exc.detail
    next_url = (
        f"{BASE}/calls?{urlencode({**filters, 'cursor': page['next_cursor']})}"
        if page["next_cursor"]
        else None
    )
    return _render(
        request,
        "calls.html",
        session,
        page="calls",
        calls=page["data"],
        filters=filters,
        error=error,
        next_url=next_url,
        all_states=[s.value for s in CallState],
        delivery_states=[s.value for s in DeliveryState],
    )


async def call(request: Request) -> Response:
    session = _session_or_login(request)
    if isinstance(session, Response):
        return session
    http = request.app.state.http
    view = await admin_ops.call_detail(http.store, request.path_params["session_id"], http.show_personal_data)
    if view is None:
        return _render(
            request,
            "calls.html",
            session,
            page="calls",
            calls=[],
            filters={},
            error="No such call.",
            next_url=None,
            all_states=[s.value for s in CallState],
            delivery_states=[s.value for s in DeliveryState],
            status=404,
        )
    return _render(request, "call.html", session, page="calls", call=view)


async def dead_letters(request: Request) -> Response:
    session = _session_or_login(request)
    if isinstance(session, Response):
        return session
    http = request.app.state.http
    handler = request.query_params.get("handler") or None
    records = await http.store.list_dead_letters(handler, None, None, 200)
    return _render(
        request,
        "dead_letters.html",
        session,
        page="dead",
        letters=[delivery_view(d) for d in records],
        handler=handler,
        handler_names=list(http.handlers),
    )


async def handlers(request: Request) -> Response:
    session = _session_or_login(request)
    if isinstance(session, Response):
        return session
    http = request.app.state.http
    listing = await admin_ops.handler_list(http.store, list(http.handlers))
    return _render(request, "handlers.html", session, page="handlers", handlers=listing["data"])


# --- actions ----------------------------------------------------------------------------------


def _who(request: Request) -> str:
    return "console:" + admin_ops.token_fingerprint(_token(request)).removeprefix("token:")


async def replay(request: Request) -> Response:
    _, form = await _form(request)
    http = request.app.state.http
    back = _back(form, f"{BASE}/dead-letters")
    dry_run = form.get("dry_run") == "1"
    if form.get("bulk") == "dead":
        handler = form.get("handler") or None
        if handler is not None and handler not in http.handlers:
            return _redirect(back, f"No handler named {handler}.")
        records = await http.store.list_dead_letters(handler, None, None, 10_000)
        ids = [d.id for d in records]
        if not ids:
            return _redirect(back, "No dead letters to replay.")
        body: dict[str, Any] = {"delivery_ids": ids, "dry_run": dry_run}
    else:
        delivery_id = form.get("delivery_id")
        if not isinstance(delivery_id, str) or not delivery_id:
            return _redirect(back, "Nothing to replay.")
        body = {"delivery_ids": [delivery_id], "dry_run": dry_run}
    answer = await admin_ops.replay_request(
        http.store, tuple(http.handlers), body, _who(request), http.clock()
    )
    if answer["replayed"]:
        http.wakeups("deliver")
    if dry_run:
        message = f"Dry run: {answer['matched']} deliveries would be replayed (replay {answer['replay_id']})."
    else:
        message = f"Replayed {answer['replayed']} of {answer['matched']} (replay {answer['replay_id']})."
    return _redirect(back, message)


async def pause_or_resume(request: Request) -> Response:
    await _form(request)
    http = request.app.state.http
    name, action = request.path_params["name"], request.path_params["action"]
    answer = await admin_ops.pause_or_resume_handler(
        http.store, list(http.handlers), name, action, _who(request), time.time()
    )
    admin_ops.forget_pauses(request)
    http.wakeups("deliver")
    state = "paused (its work stays queued)" if answer["paused"] else "resumed"
    return _redirect(f"{BASE}/handlers", f"{name} {state}.")


async def resume_starting(request: Request) -> Response:
    await _form(request)
    http = request.app.state.http
    http.gate.resume()
    http.wakeups("start")
    return _redirect(BASE, "Starting resumed.")


CONSOLE_ROUTES = [
    Route("/", overview, methods=["GET"]),
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/calls", calls, methods=["GET"]),
    Route("/calls/{session_id}", call, methods=["GET"]),
    Route("/dead-letters", dead_letters, methods=["GET"]),
    Route("/handlers", handlers, methods=["GET"]),
    Route("/replay", replay, methods=["POST"]),
    Route("/handlers/{name}/{action}", pause_or_resume, methods=["POST"]),
    Route("/starting/resume", resume_starting, methods=["POST"]),
    Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="console-static"),
]
