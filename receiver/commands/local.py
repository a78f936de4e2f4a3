"""The admin API's paths answered from the local database (the CLI without ``--url``)."""

from __future__ import annotations

import getpass
import time
from typing import TYPE_CHECKING, Any

from receiver import admin_ops
from receiver.admin import delivery_view, parse_since
from receiver.commands.errors import USAGE, CommandFailed
from receiver.store import Store

if TYPE_CHECKING:
    from receiver.commands.source import LocalSource


def _handler_names(source: LocalSource) -> list[str]:
    names = [str(h.get("name")) for h in source.settings.handlers if h.get("name")]
    return names


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


async def get(source: LocalSource, store: Store, path: str, params: dict[str, Any]) -> Any:
    if path == "/admin/calls":
        return await admin_ops.calls_page(store, params)
    if path.startswith("/admin/calls/"):
        show = source.settings.admin_show_personal_data
        return await admin_ops.call_detail(store, path.removeprefix("/admin/calls/"), show)
    if path == "/admin/dead-letters":
        try:
            since = parse_since(params.get("since"))
        except ValueError as exc:
            raise CommandFailed(str(exc), USAGE) from None
        records = await store.list_dead_letters(
            params.get("handler"), params.get("session_id"), since, int(params.get("limit", 100))
        )
        return {"dead_letters": [delivery_view(d) for d in records]}
    if path == "/admin/replays":
        return await admin_ops.replay_log(store, int(params.get("limit", 50)))
    if path == "/admin/handlers":
        return await admin_ops.handler_list(store, _handler_names(source))
    raise CommandFailed(f"{path} is not available without --url", USAGE)


async def post(source: LocalSource, store: Store, path: str, body: dict[str, Any]) -> Any:
    now = time.time()
    if path == "/admin/replay":
        configured = tuple(_handler_names(source))
        return await admin_ops.replay_request(store, configured, body, _who(), now)
    if path == "/admin/deliveries/discard":
        return {"discarded": await store.discard_deliveries(list(body["delivery_ids"]), now)}
    if path == "/admin/deliveries/move":
        if body["handler"] not in _handler_names(source):
            raise CommandFailed(f"no handler named {body['handler']!r}", USAGE)
        return {"moved": await store.move_deliveries(list(body["delivery_ids"]), body["handler"], now)}
    if path.startswith("/admin/handlers/"):
        name, _, action = path.removeprefix("/admin/handlers/").rpartition("/")
        return await admin_ops.pause_or_resume_handler(
            store, _handler_names(source), name, action, _who(), now
        )
    raise CommandFailed(
        f"{path} needs the running service: use --url BASE_ADMIN_URL (or RECEIVER_ADMIN_URL)", USAGE
    )
