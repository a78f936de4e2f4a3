"""``calls``, ``dead-letters``, ``replay``, ``replays``, ``handlers`` and ``starting``: argparse
wiring, and what each prints (a short human view, or ``--json`` for scripts)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from receiver.commands.errors import FAILED, SUCCESS, USAGE, CommandFailed
from receiver.commands.source import HttpSource, Source, choose

_FILTERS = ("state", "since", "until", "time", "session_id", "phone", "handler", "delivery_state", "reason")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _deliveries(view: dict[str, Any]) -> str:
    return " ".join(f"{d['handler']}:{d['state']}" for d in view["deliveries"]) or "-"


def _query(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in _FILTERS if getattr(args, name, None) is not None}


# --- calls ------------------------------------------------------------------------------------


def calls_list(args: argparse.Namespace, source: Source) -> int:
    page = source.get("/admin/calls", {**_query(args), "limit": args.limit, "cursor": args.cursor})
    if args.json:
        _print_json(page)
        return SUCCESS
    for view in page["data"]:
        received = view["timestamps"]["received_at"]
        reason = f"  ({view['reason']})" if view["reason"] else ""
        print(f"{view['session_id']:<28} {view['state']:<10} {received}  {_deliveries(view)}{reason}")
    if page["next_cursor"]:
        print(f"(more: --cursor {page['next_cursor']})")
    return SUCCESS


def calls_show(args: argparse.Namespace, source: Source) -> int:
    view = source.get(f"/admin/calls/{args.session_id}")
    if view is None:
        raise CommandFailed(f"no call with session id {args.session_id}", FAILED)
    if args.json:
        _print_json(view)
        return SUCCESS
    print(f"{view['session_id']}: {view['state']}" + (f" ({view['reason']})" if view["reason"] else ""))
    print(f"  analysis: {view['analysis_id'] or '-'}  status: {view['analysis_status'] or '-'}")
    print(f"  start attempts: {view['start_attempts']}  polls: {view['polls']}")
    for stage in view.get("stages", []):
        took = f"+{stage['seconds']}s" if stage["seconds"] is not None else ""
        print(f"  {stage['stage']:<24} {stage['at'] or '-':<28} {took}")
    for d in view["deliveries"]:
        if d["state"] == "filtered":
            print(f"  delivery {d['handler']}: filtered (its 'when' did not match: nothing was sent)")
            continue
        extra = f" next {d['next_attempt_at']}" if d["next_attempt_at"] else ""
        error = f" last error: {d['last_error']}" if d["last_error"] else ""
        print(f"  delivery {d['handler']}: {d['state']} after {d['attempts']} attempt(s){extra}{error}")
    for a in view.get("attempts", []):
        target = f" to {a['handler']}" if a["handler"] else ""
        code = f" HTTP {a['code']}" if a["code"] else ""
        reason = f": {a['reason']}" if a["reason"] else ""
        request = f" [Kallglot request {a['kallglot_request_id']}]" if a.get("kallglot_request_id") else ""
        print(f"  attempt {a['at']} {a['kind']}{target}: {a['outcome']}{code}{reason}{request}")
    return SUCCESS


# --- dead letters -----------------------------------------------------------------------------


def _dead_letters(args: argparse.Namespace, source: Source) -> list[dict[str, Any]]:
    params = {"handler": args.handler, "session_id": args.session, "since": args.since, "limit": args.limit}
    letters: list[dict[str, Any]] = source.get("/admin/dead-letters", params)["dead_letters"]
    return letters


def _check_handler(source: Source, handler: str | None) -> None:
    if handler is None:
        return
    names = [h["name"] for h in source.get("/admin/handlers")["data"]]
    if handler not in names:
        raise CommandFailed(f"no handler named {handler!r} (configured: {', '.join(names) or 'none'})", USAGE)


def dead_letters_list(args: argparse.Namespace, source: Source) -> int:
    _check_handler(source, args.handler)
    letters = _dead_letters(args, source)
    if args.json:
        _print_json(letters)
        return SUCCESS
    for d in letters:
        print(f"{d['id']}  {d['session_id']:<28} {d['handler']:<16} {d['dead_at']}  {d['last_error']}")
    if not letters:
        print("no dead letters")
    return SUCCESS


def dead_letters_replay(args: argparse.Namespace, source: Source) -> int:
    if not (args.all or args.handler or args.session or args.since):
        raise CommandFailed(
            "replay every dead letter? say --all (or narrow with --handler/--session/--since)", USAGE
        )
    _check_handler(source, args.handler)
    letters = _dead_letters(args, source)
    if not letters:
        answer: dict[str, Any] = {"matched": 0, "replayed": 0, "replay_id": None}
    else:
        body = {"delivery_ids": [d["id"] for d in letters], "dry_run": args.dry_run}
        answer = source.post("/admin/replay", body)
    return _replayed(args, answer)


def _replayed(args: argparse.Namespace, answer: dict[str, Any]) -> int:
    if getattr(args, "json", False):
        _print_json(answer)
    elif args.dry_run:
        print(f"dry run: {answer['matched']} deliveries would be replayed (replay {answer['replay_id']})")
    else:
        print(
            f"replayed: {answer['replayed']} of {answer['matched']} (replay {answer['replay_id']});"
            " a running receiver delivers them within a second"
        )
    return SUCCESS


# --- replay / replays -------------------------------------------------------------------------


def replay(args: argparse.Namespace, source: Source) -> int:
    body: dict[str, Any] = {"dry_run": args.dry_run, "handlers": args.to or []}
    if args.who:
        body["who"] = args.who
    if args.ids:
        body["delivery_ids"] = args.ids
    else:
        query = _query(args)
        if not query and not args.all:
            raise CommandFailed("replay every finished call? say --all (or give filters or --ids)", USAGE)
        body["query"] = query
    return _replayed(args, source.post("/admin/replay", body))


def replays_list(args: argparse.Namespace, source: Source) -> int:
    log = source.get("/admin/replays", {"limit": args.limit})["data"]
    if args.json:
        _print_json(log)
        return SUCCESS
    for r in log:
        kind = "dry run" if r["dry_run"] else "replay"
        print(
            f"{r['replay_id']}  {r['at']}  {r['who']:<20} {kind}: {r['replayed']}/{r['matched']}  {json.dumps(r['request'])}"
        )
    return SUCCESS


# --- deliveries: discard / move ----------------------------------------------------------------


def deliveries_discard_or_move(args: argparse.Namespace, source: Source) -> int:
    if args.action == "move":
        answer = source.post("/admin/deliveries/move", {"delivery_ids": args.ids, "handler": args.to})
        print(f"moved to {args.to}: {answer['moved']} of {len(args.ids)} (dead or orphaned ones only)")
        return SUCCESS if answer["moved"] else FAILED
    answer = source.post("/admin/deliveries/discard", {"delivery_ids": args.ids})
    print(f"discarded: {answer['discarded']} of {len(args.ids)} (dead or orphaned ones only)")
    return SUCCESS if answer["discarded"] else FAILED


# --- handlers / starting ------------------------------------------------------------------------


def handlers_list(args: argparse.Namespace, source: Source) -> int:
    data = source.get("/admin/handlers")["data"]
    if args.json:
        _print_json(data)
        return SUCCESS
    for h in data:
        state = f"paused by {h['paused_by']} since {h['paused_at']}" if h["paused"] else "active"
        print(f"{h['name']:<20} {state}")
    return SUCCESS


def handlers_pause_or_resume(args: argparse.Namespace, source: Source) -> int:
    body = {"who": args.who} if args.who else {}
    answer = source.post(f"/admin/handlers/{args.name}/{args.action}", body)
    print(f"{answer['name']}: {'paused (its work stays queued)' if answer['paused'] else 'resumed'}")
    return SUCCESS


def starting_resume(args: argparse.Namespace, source: Source) -> int:
    if not isinstance(source, HttpSource):  # the start gate lives in the running process
        raise CommandFailed(
            "starting resume needs the running service: use --url (or RECEIVER_ADMIN_URL)", USAGE
        )
    source.post("/admin/starting/resume", {})
    print("starting resumed: waiting calls are started now")
    return SUCCESS


# --- wiring -----------------------------------------------------------------------------------


def _run(fn: Any) -> Any:
    def command(args: argparse.Namespace) -> int:
        try:
            code: int = fn(args, choose(args.url))
        except CommandFailed as exc:
            print(f"kallglot-receiver: {exc}", file=__import__("sys").stderr)
            return exc.code
        return code

    return command


def _common(p: argparse.ArgumentParser, *, read: bool = True) -> None:
    p.add_argument(
        "--url",
        help="admin base URL of a running service (or RECEIVER_ADMIN_URL); token from RECEIVER_ADMIN_TOKEN",
    )
    if read:
        p.add_argument("--json", action="store_true", help="JSON output for scripts")


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", help="comma list of call states")
    p.add_argument("--since", help="Unix seconds or ISO-8601 (on --time)")
    p.add_argument("--until", help="Unix seconds or ISO-8601 (on --time)")
    p.add_argument(
        "--time", choices=["received", "finished"], help="which time --since/--until use (received)"
    )
    p.add_argument("--session", dest="session_id", help="sess_…")
    p.add_argument("--phone", help="a call's from or to number")
    p.add_argument("--handler", help="calls with a delivery to this handler")
    p.add_argument(
        "--delivery-state", dest="delivery_state", help="pending, delivered, filtered, dead, orphaned"
    )
    p.add_argument("--reason", help="text in the call's reason")


def add_commands(sub: Any) -> None:
    calls = sub.add_parser("calls", help="inspect calls").add_subparsers(dest="action", required=True)
    p = calls.add_parser("list", help="calls newest first, filtered")
    _common(p)
    _filters(p)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor", help="the next page (printed after a full page)")
    p.set_defaults(func=_run(calls_list))
    p = calls.add_parser("show", help="a call's state, stage timeline and deliveries")
    p.add_argument("session_id")
    _common(p)
    p.set_defaults(func=_run(calls_show))

    dead = sub.add_parser("dead-letters", help="failed deliveries").add_subparsers(
        dest="action", required=True
    )
    for action, fn in (("list", dead_letters_list), ("replay", dead_letters_replay)):
        p = dead.add_parser(action)
        _common(p, read=True)
        p.add_argument("--handler")
        p.add_argument("--session")
        p.add_argument("--since", help="dead since: Unix seconds or ISO-8601")
        p.add_argument("--limit", type=int, default=100)
        if action == "replay":
            p.add_argument("--all", action="store_true", help="replay every dead letter (up to --limit)")
            p.add_argument("--dry-run", action="store_true")
        p.set_defaults(func=_run(fn))

    p = sub.add_parser("replay", help="re-send finished calls' results (never a new analysis)")
    _common(p)
    _filters(p)
    p.add_argument("--ids", nargs="+", help="delivery ids (instead of filters)")
    p.add_argument("--to", action="append", help="only this handler (repeatable; creates missing deliveries)")
    p.add_argument("--all", action="store_true", help="with no filter: every finished call")
    p.add_argument("--dry-run", action="store_true", help="count what would be sent")
    p.add_argument("--who", help="recorded in the replay log (default: a token fingerprint or the user)")
    p.set_defaults(func=_run(replay))

    p = sub.add_parser("replays", help="the replay log").add_subparsers(dest="action", required=True)
    q = p.add_parser("list")
    _common(q)
    q.add_argument("--limit", type=int, default=50)
    q.set_defaults(func=_run(replays_list))

    deliveries = sub.add_parser("deliveries", help="discard or move dead or orphaned deliveries")
    actions = deliveries.add_subparsers(dest="action", required=True)
    p = actions.add_parser("discard", help="drop them (a call left with only delivered ones is delivered)")
    p.add_argument("ids", nargs="+", help="delivery ids (see dead-letters list / calls show)")
    _common(p, read=False)
    p.set_defaults(func=_run(deliveries_discard_or_move))
    p = actions.add_parser("move", help="give them to another handler, pending again")
    p.add_argument("ids", nargs="+")
    p.add_argument("--to", required=True, help="a configured handler")
    _common(p, read=False)
    p.set_defaults(func=_run(deliveries_discard_or_move))

    handlers = sub.add_parser("handlers", help="list, pause or resume handlers").add_subparsers(
        dest="action", required=True
    )
    p = handlers.add_parser("list")
    _common(p)
    p.set_defaults(func=_run(handlers_list))
    for action in ("pause", "resume"):
        p = handlers.add_parser(action)
        p.add_argument("name")
        p.add_argument("--who")
        _common(p, read=False)
        p.set_defaults(func=_run(handlers_pause_or_resume))

    starting = sub.add_parser("starting", help="the start gate").add_subparsers(dest="action", required=True)
    p = starting.add_parser("resume", help="start waiting calls now (after credits were topped up)")
    _common(p, read=False)
    p.set_defaults(func=_run(starting_resume))
