"""The operator operations behind the admin API, the console and the CLI's local mode: parse
filters, list and show calls, replay (recorded), list replays, pause/resume handlers. Bad input
raises Starlette's ``HTTPException`` (4xx), which each front end turns into its own answer."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from datetime import datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request

from receiver.admin import call_view, iso, parse_since
from receiver.fanout import document
from receiver.lifecycle import CallState, DeliveryState
from receiver.store import Store
from receiver.store.operations import ReplayRequest
from receiver.store.query import MAX_LIMIT, CallQuery, InvalidQuery, decode_cursor, encode_cursor

log = logging.getLogger("receiver")
_DELIVERY_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
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
    if not isinstance(value, str) or len(value) > 500 or not _storable(value):
        raise HTTPException(400, f"{name} must be text of at most 500 characters (no NUL)")
    return value


def _storable(value: str) -> bool:
    """Text every store accepts: PostgreSQL refuses NUL and lone surrogates (not UTF-8)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
        limit=parse_limit(values.get("limit"), 100) if paged else MAX_LIMIT,
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
            "kallglot_request_id": a.request_id,
        }
        for a in await store.list_attempts(session_id)
    ]
    if not show_personal_data:
        view["call"] = mask_personal(call.fields)
    else:
        view["documents"] = {
            d.handler: document(d.id, call.session_id, d.status, call.fields, call.analysis or {})
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
        or not all(isinstance(i, str) and _DELIVERY_ID.fullmatch(i) for i in value)
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


def forget_pauses(request: Request) -> None:
    """This process sees a pause at once; other replicas within a second (their next read)."""
    for loop in getattr(getattr(request.app.state, "runtime", None), "loops", []):
        forget = getattr(loop, "forget_pauses", None)
        if callable(forget):
            forget()
