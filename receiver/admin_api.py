"""The operator API (CONTRACT §9, admin listener): list and filter calls, one call in full,
replay by ids or by query (dry run, replay log), discard/move dead or orphaned deliveries,
pause/resume a handler, resume starting.

Every route needs ``Authorization: Bearer RECEIVER_ADMIN_TOKEN``. Bad input is a 400 naming the
parameter. Replays never start an analysis; each one is recorded with who asked (the caller's
``who`` or a fingerprint of the token), when, what and how many.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from receiver.admin import call_view, iso, parse_since
from receiver.lifecycle import CallState, DeliveryState
from receiver.routing import document
from receiver.store import Store
from receiver.store.operations import ReplayRequest
from receiver.store.query import MAX_LIMIT, CallQuery, InvalidQuery, decode_cursor, encode_cursor

log = logging.getLogger("receiver")
_MAX_BODY = 1_048_576


def authorize(request: Request) -> Any:
    """The app's HttpState when the bearer token matches (404 when no token is configured)."""
    http = request.app.state.http
    if http.admin_token is None:
        raise HTTPException(404, "set RECEIVER_ADMIN_TOKEN to enable /admin")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), http.admin_token.encode()):
        raise HTTPException(401, "a valid 'Authorization: Bearer <RECEIVER_ADMIN_TOKEN>' is required")
    return http


def token_fingerprint(token: str) -> str:
    """Who replayed, without the token: the first 12 hex digits of its SHA-256."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def parse_limit(raw: Any, default: int, maximum: int = MAX_LIMIT) -> int:
    text = str(default if raw is None else raw)
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= maximum:
        raise HTTPException(400, f"limit must be a whole number from 1 to {maximum}")
    return int(text)


def _text(values: dict[str, Any], name: str) -> str | None:
    value = values.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 500:
        raise HTTPException(400, f"{name} must be a string of at most 500 characters")
    return value


def _time(values: dict[str, Any], name: str) -> float | None:
    value = values.get(name)
    if value is None or value == "":
        return None
    try:
        return parse_since(str(value))
    except ValueError:
        raise HTTPException(400, f"{name} must be Unix seconds or an ISO-8601 time") from None


def parse_query(values: dict[str, Any], *, paged: bool = True) -> CallQuery:
    """``CallQuery`` from query parameters or a JSON object (``state`` may be a list or a comma list)."""
    raw_states = values.get("state") or []
    if isinstance(raw_states, str):
        raw_states = [s for s in raw_states.split(",") if s]
    try:
        states = tuple(CallState(s) for s in raw_states)
    except (ValueError, TypeError):
        raise HTTPException(400, f"state must be among {', '.join(s.value for s in CallState)}") from None
    delivery_state = _text(values, "delivery_state")
    try:
        parsed_delivery_state = DeliveryState(delivery_state) if delivery_state else None
    except ValueError:
        raise HTTPException(
            400, f"delivery_state must be among {', '.join(s.value for s in DeliveryState)}"
        ) from None
    time_field = _text(values, "time") or "received"
    if time_field not in ("received", "finished"):
        raise HTTPException(400, "time must be received or finished")
    cursor = _text(values, "cursor")
    try:
        parsed_cursor = decode_cursor(cursor) if cursor and paged else None
    except InvalidQuery as exc:
        raise HTTPException(400, str(exc)) from None
    return CallQuery(
        states=states,
        since=_time(values, "since"),
        until=_time(values, "until"),
        time_field=time_field,
        session_id=_text(values, "session_id"),
        phone=_text(values, "phone"),
        handler=_text(values, "handler"),
        delivery_state=parsed_delivery_state,
        reason=_text(values, "reason"),
        limit=parse_limit(values.get("limit"), 50) if paged else MAX_LIMIT,
        cursor=parsed_cursor,
    )


#: Fields of a call that identify people: shown only with RECEIVER_ADMIN_SHOW_PERSONAL_DATA=true.
PERSONAL_FIELDS = frozenset({"from", "to", "agent", "metadata", "phone_number", "caller", "callee"})


def mask_personal(call: dict[str, Any]) -> dict[str, Any]:
    return {k: ("(hidden)" if k in PERSONAL_FIELDS else v) for k, v in call.items()}


def summary(view: dict[str, Any]) -> dict[str, Any]:
    """A call as the list shows it (no personal data: the call's own fields stay out)."""
    return {
        "session_id": view["session_id"],
        "state": view["state"],
        "reason": view["reason"],
        "analysis_id": view["analysis_id"],
        "timestamps": view["timestamps"],
        "deliveries": [
            {k: d[k] for k in ("id", "handler", "state", "attempts", "last_error", "next_attempt_at")}
            for d in view["deliveries"]
        ],
    }


async def read_json(request: Request) -> dict[str, Any]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_BODY:
            raise HTTPException(413, "request body too large")
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except ValueError:
        raise HTTPException(400, "the body must be a JSON object") from None
    if not isinstance(parsed, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return parsed


# --- the operations (shared by the routes below and the CLI's local mode) ----------------------


async def calls_page(store: Store, values: dict[str, Any]) -> dict[str, Any]:
    query = parse_query(values)
    page, more = await store.list_calls(query)
    data = [summary(call_view(call, deliveries)) for call, deliveries in page]
    last = page[-1][0] if page and more else None
    cursor = encode_cursor(last.received_at, last.session_id) if last else None
    return {"data": data, "next_cursor": cursor}


async def call_detail(store: Store, session_id: str, show_personal_data: bool) -> dict[str, Any] | None:
    found = await store.get_call(session_id)
    if found is None:
        return None
    call, deliveries = found
    view = call_view(call, deliveries)
    view["stages"] = stages(view)
    view["attempts"] = [
        {
            "at": iso(a.at),
            "kind": a.kind,
            "handler": a.handler,
            "outcome": a.outcome,
            "code": a.code,
            "reason": a.reason,
            "next_attempt_at": iso(a.next_at),
        }
        for a in await store.list_attempts(session_id)
    ]
    if not show_personal_data:
        view["call"] = mask_personal(call.call)
    else:
        view["documents"] = {
            d.handler: document(call.session_id, d.handler, d.status, call.call, call.analysis or {})
            for d in deliveries
        }
    return view


def stages(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The call's timeline (received -> started -> finished -> delivered per handler) with the
    seconds each stage took from the one before."""

    def ts(value: str | None) -> float | None:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None

    t = view["timestamps"]
    out: list[dict[str, Any]] = []
    previous = ts(t["received_at"])
    for name in ("received", "started", "finished"):
        value = t[f"{name}_at"]
        at = ts(value)
        out.append({"stage": name, "at": value, "seconds": _gap(previous, at) if name != "received" else 0.0})
        previous = at if at is not None else previous
    finished = ts(t["finished_at"])
    for d in view["deliveries"]:
        at = ts(d["delivered_at"])
        out.append(
            {"stage": f"delivered:{d['handler']}", "at": d["delivered_at"], "seconds": _gap(finished, at)}
        )
    return out


def _gap(start: float | None, end: float | None) -> float | None:
    return round(end - start, 3) if start is not None and end is not None else None


def _id_list(value: Any) -> list[str]:
    if (
        not isinstance(value, list)
        or not value
        or len(value) > 10_000
        or not all(isinstance(i, str) for i in value)
    ):
        raise HTTPException(400, "delivery_ids must be a non-empty list of at most 10000 ids")
    return value


async def replay_request(
    store: Store, configured: tuple[str, ...], body: dict[str, Any], default_who: str, now: float
) -> dict[str, Any]:
    """Validate a replay body and run it (see ``receiver.store.operations``)."""
    handlers = body.get("handlers") or []
    if not isinstance(handlers, list) or not all(isinstance(h, str) for h in handlers):
        raise HTTPException(400, "handlers must be a list of handler names")
    unknown = [h for h in handlers if h not in configured]
    if unknown:
        raise HTTPException(400, f"no handler named {unknown[0]!r}")
    ids, raw_query = body.get("delivery_ids"), body.get("query")
    if (ids is None) == (raw_query is None):
        raise HTTPException(400, "give either delivery_ids or query")
    if ids is not None:
        ids = _id_list(ids)
    if raw_query is not None and not isinstance(raw_query, dict):
        raise HTTPException(400, "query must be an object with the filters of GET /admin/calls")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise HTTPException(400, "dry_run must be true or false")
    who = _text(body, "who") or default_who
    query = parse_query(raw_query, paged=False) if raw_query is not None else None
    description: dict[str, Any] = (
        {"delivery_ids": ids} if ids is not None else {"query": query.as_json() if query else {}}
    )
    description["handlers"] = handlers
    request = ReplayRequest(
        who=who,
        configured=configured,
        delivery_ids=tuple(ids or ()),
        query=query,
        handlers=tuple(handlers),
        dry_run=dry_run,
        description=description,
    )
    outcome = await store.replay(request, now)
    log.info(
        "replay.recorded",
        extra={
            "replay_id": outcome.replay_id,
            "who": who,
            "matched": outcome.matched,
            "replayed": outcome.replayed,
            "dry_run": dry_run,
        },
    )
    return {"matched": outcome.matched, "replayed": outcome.replayed, "replay_id": outcome.replay_id}


async def replay_log(store: Store, limit: int) -> dict[str, Any]:
    records = await store.list_replays(limit)
    return {
        "data": [
            {
                "replay_id": r.id,
                "who": r.who,
                "at": iso(r.at),
                "dry_run": r.dry_run,
                "request": r.request,
                "matched": r.matched,
                "replayed": r.replayed,
            }
            for r in records
        ]
    }


async def handler_list(store: Store, names: list[str]) -> dict[str, Any]:
    paused = await store.paused_handlers()
    return {
        "data": [
            {
                "name": name,
                "paused": name in paused,
                "paused_by": paused[name][0] if name in paused else None,
                "paused_at": iso(paused[name][1]) if name in paused else None,
            }
            for name in names
        ]
    }


async def pause_or_resume_handler(
    store: Store, names: list[str], name: str, action: str, who: str, now: float
) -> dict[str, Any]:
    if action not in ("pause", "resume"):
        raise HTTPException(404, "no such action")
    if name not in names:
        raise HTTPException(404, f"no handler named {name!r}")
    if action == "pause":
        await store.pause_handler(name, who, now)
    else:
        await store.resume_handler(name)
    log.info(
        "handler.paused" if action == "pause" else "handler.resumed", extra={"handler": name, "who": who}
    )
    return {"name": name, "paused": action == "pause"}


# --- routes -----------------------------------------------------------------------------------


async def list_calls(request: Request) -> Response:
    http = authorize(request)
    return JSONResponse(await calls_page(http.service.store, dict(request.query_params)))


async def show_call(request: Request) -> Response:
    http = authorize(request)
    view = await call_detail(http.service.store, request.path_params["session_id"], http.show_personal_data)
    if view is None:
        raise HTTPException(404, "no such call")
    return JSONResponse(view)


async def replay(request: Request) -> Response:
    http = authorize(request)
    body = await read_json(request)
    answer = await replay_request(
        http.service.store,
        tuple(http.service.handlers),
        body,
        token_fingerprint(http.admin_token),
        http.service.clock(),
    )
    if answer["replayed"]:
        http.service.wakeups("deliver")
    return JSONResponse(answer)


async def list_replays(request: Request) -> Response:
    http = authorize(request)
    return JSONResponse(
        await replay_log(http.service.store, parse_limit(request.query_params.get("limit"), 50))
    )


async def discard(request: Request) -> Response:
    http = authorize(request)
    ids = _id_list((await read_json(request)).get("delivery_ids"))
    count = await http.service.store.discard_deliveries(ids, http.service.clock())
    log.info("deliveries.discarded", extra={"count": count})
    return JSONResponse({"discarded": count})


async def move(request: Request) -> Response:
    http = authorize(request)
    body = await read_json(request)
    ids = _id_list(body.get("delivery_ids"))
    target = body.get("handler")
    if not isinstance(target, str) or target not in http.service.handlers:
        raise HTTPException(400, "handler must name a configured handler")
    count = await http.service.store.move_deliveries(ids, target, http.service.clock())
    if count:
        http.service.wakeups("deliver")
    log.info("deliveries.moved", extra={"count": count, "handler": target})
    return JSONResponse({"moved": count})


async def handlers(request: Request) -> Response:
    http = authorize(request)
    return JSONResponse(await handler_list(http.service.store, list(http.service.handlers)))


async def pause_or_resume(request: Request) -> Response:
    http = authorize(request)
    body = await read_json(request)
    answer = await pause_or_resume_handler(
        http.service.store,
        list(http.service.handlers),
        request.path_params["name"],
        request.path_params["action"],
        _text(body, "who") or token_fingerprint(http.admin_token),
        http.service.clock(),
    )
    forget_pauses(request)
    http.service.wakeups("deliver")
    return JSONResponse(answer)


def forget_pauses(request: Request) -> None:
    """This process sees a pause at once; other replicas within a second (their next read)."""
    for loop in getattr(getattr(request.app.state, "runtime", None), "loops", []):
        forget = getattr(loop, "forget_pauses", None)
        if callable(forget):
            forget()


async def resume_starting(request: Request) -> Response:
    http = authorize(request)
    http.service.gate.resume()
    http.service.wakeups("start")
    log.info("starting.resumed_by_operator")
    return JSONResponse({"starting": "resumed"})


def _console() -> list[BaseRoute]:
    from receiver.console import CONSOLE_ROUTES
    from receiver.console.pages import overview

    return [
        Route("/admin/console", overview, methods=["GET"]),
        Mount("/admin/console", routes=CONSOLE_ROUTES),
    ]


ADMIN_ROUTES: list[BaseRoute] = [
    Route("/admin/calls", list_calls, methods=["GET"]),
    Route("/admin/calls/{session_id}", show_call, methods=["GET"]),
    Route("/admin/replay", replay, methods=["POST"]),
    Route("/admin/replays", list_replays, methods=["GET"]),
    Route("/admin/deliveries/discard", discard, methods=["POST"]),
    Route("/admin/deliveries/move", move, methods=["POST"]),
    Route("/admin/handlers", handlers, methods=["GET"]),
    Route("/admin/handlers/{name}/{action}", pause_or_resume, methods=["POST"]),
    Route("/admin/starting/resume", resume_starting, methods=["POST"]),
    *_console(),
]
