"""The operator API (CONTRACT §9, admin listener): list and filter calls, one call in full,
replay by ids or by query (dry run, replay log), discard/move dead or orphaned deliveries,
pause/resume a handler, resume starting.

Every route needs ``Authorization: Bearer RECEIVER_ADMIN_TOKEN``. Bad input is a 400 naming the
parameter. Replays never start an analysis; each one is recorded with who asked (the caller's
``who`` or a fingerprint of the token), when, what and how many.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from receiver.admin_ops import (
    _id_list,
    _text,
    authorize,
    call_detail,
    calls_page,
    forget_pauses,
    handler_list,
    parse_limit,
    pause_or_resume_handler,
    read_json,
    replay_log,
    replay_request,
    token_fingerprint,
)
from receiver.console import CONSOLE_ROUTES
from receiver.console.pages import overview

log = logging.getLogger("receiver")


# --- routes -----------------------------------------------------------------------------------


async def list_calls(request: Request) -> Response:
    http = authorize(request)
    return JSONResponse(await calls_page(http.store, dict(request.query_params)))


async def show_call(request: Request) -> Response:
    http = authorize(request)
    view = await call_detail(http.store, request.path_params["session_id"], http.show_personal_data)
    if view is None:
        raise HTTPException(404, "no such call")
    return JSONResponse(view)


async def replay(request: Request) -> Response:
    http = authorize(request)
    body = await read_json(request)
    answer = await replay_request(
        http.store,
        tuple(http.handlers),
        body,
        token_fingerprint(http.admin_token),
        http.clock(),
    )
    if answer["replayed"]:
        http.wakeups("deliver")
    return JSONResponse(answer)


async def list_replays(request: Request) -> Response:
    http = authorize(request)
    return JSONResponse(await replay_log(http.store, parse_limit(request.query_params.get("limit"), 50)))


async def discard(request: Request) -> Response:
    http = authorize(request)
    ids = _id_list((await read_json(request)).get("delivery_ids"))
    count = await http.store.discard_deliveries(ids, http.clock())
    log.info("deliveries.discarded", extra={"count": count})
    return JSONResponse({"discarded": count})


async def move(request: Request) -> Response:
    http = authorize(request)
    body = await read_json(request)
    ids = _id_list(body.get("delivery_ids"))
    target = body.get("handler")
    if not isinstance(target, str) or target not in http.handlers:
        raise HTTPException(400, "handler must name a configured handler")
    count = await http.store.move_deliveries(ids, target, http.clock())
    if count:
        http.wakeups("deliver")
    log.info("deliveries.moved", extra={"count": count, "handler": target})
    return JSONResponse({"moved": count})


async def handlers(request: Request) -> Response:
    http = authorize(request)
    return JSONResponse(await handler_list(http.store, list(http.handlers)))


async def pause_or_resume(request: Request) -> Response:
    http = authorize(request)
    body = await read_json(request)
    answer = await pause_or_resume_handler(
        http.store,
        list(http.handlers),
        request.path_params["name"],
        request.path_params["action"],
        _text(body, "who") or token_fingerprint(http.admin_token),
        http.clock(),
    )
    forget_pauses(request)
    http.wakeups("deliver")
    return JSONResponse(answer)


async def resume_starting(request: Request) -> Response:
    http = authorize(request)
    http.gate.resume()
    http.wakeups("start")
    log.info("starting.resumed_by_operator")
    return JSONResponse({"starting": "resumed"})


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
    Route("/admin/console", overview, methods=["GET"]),
    Mount("/admin/console", routes=CONSOLE_ROUTES),
]
