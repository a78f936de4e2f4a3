"""``send``: sign and send a test event to a running receiver, then follow the call over the admin API."""

from __future__ import annotations

import argparse
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from receiver.commands.errors import fail
from receiver.commands.sandbox import DEFAULT_ADMIN_PORT, DEV_ADMIN_TOKEN, DEV_INBOUND_SECRET
from receiver.secret_settings import SecretFileError, secret_from_env
from receiver.signing import sign_kallglot, sign_standard_webhooks

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_ADMIN_URL = f"http://127.0.0.1:{DEFAULT_ADMIN_PORT}"


def build_event(event: str, session_id: str, analysis_id: str | None, now: float) -> dict[str, Any]:
    created = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
    if event == "session.ended":
        data: dict[str, Any] = {"id": session_id, "object": "session", "status": "ended", "duration": 245.3}
    elif event == "transcript.ready":
        data = {
            "id": f"trn_{session_id}",
            "object": "transcript",
            "session_id": session_id,
            "status": "completed",
        }
    else:
        data = {
            "id": analysis_id or f"anl_{uuid.uuid5(uuid.NAMESPACE_URL, session_id).hex[:16]}",
            "object": "analysis",
            "session_id": session_id,
            "status": "failed" if event == "analysis.failed" else "completed",
        }
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": event,
        "api_version": "v1",
        "created_at": created,
        "data": data,
    }


def cmd_send(args: argparse.Namespace) -> int:
    from receiver.sandbox import DEV_WEBHOOK_SECRET

    now = time.time()
    base = args.to.rstrip("/")
    if args.event in ("twilio.completed", "telnyx.hangup"):
        from receiver.carriers.dev import send_request

        url, body, headers = send_request(args.event, base, args.session, args.secret)
    elif args.event == "call-ended":
        body = json.dumps(
            {
                "session_id": args.session,
                "call_id": f"CA{uuid.uuid4().hex[:16]}",
                "ended_at": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
                "duration_seconds": 245.3,
                "direction": "inbound",
                "from": "+14155550100",
                "to": "+14155550199",
                "end_session": args.end_session,
            }
        ).encode()
        url = f"{base}/events/call-ended"
        headers = sign_standard_webhooks(
            args.secret or DEV_INBOUND_SECRET, f"msg_{uuid.uuid4().hex}", int(now), body
        )
    else:
        body = json.dumps(build_event(args.event, args.session, args.analysis, now)).encode()
        url = f"{base}/webhooks/kallglot"
        headers = {"Kallglot-Signature": sign_kallglot(args.secret or DEV_WEBHOOK_SECRET, int(now), body)}
    headers.setdefault("Content-Type", "application/json")
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        return fail(f"cannot reach {url}: {exc}")
    print(f"{args.event} for {args.session} -> {url}: HTTP {response.status_code} {response.text}")
    if response.status_code >= 300:
        return 1
    if args.wait > 0:
        try:
            token = args.admin_token or secret_from_env("RECEIVER_ADMIN_TOKEN") or DEV_ADMIN_TOKEN
        except SecretFileError as exc:
            return fail(str(exc))
        return _follow(args.admin_url.rstrip("/"), args.session, token, args.wait)
    return 0


def _follow(base: str, session_id: str, token: str, wait: float) -> int:
    """Print the call's progress (a line only when what it shows changes) until it is delivered,
    skipped, failed or dead-lettered, or ``wait`` seconds pass. Exit 1 unless it was delivered
    with a completed analysis."""
    deadline = time.monotonic() + wait
    last: tuple[Any, ...] | None = None
    with httpx.Client(timeout=5, headers={"Authorization": f"Bearer {token}"}) as client:
        while time.monotonic() < deadline:
            try:
                response = client.get(f"{base}/admin/calls/{session_id}")
            except httpx.HTTPError:
                time.sleep(0.3)
                continue
            if response.status_code in (401, 404) and "error" in response.json():
                code = response.json()["error"].get("code")
                if code != "not_found" or "RECEIVER_ADMIN_TOKEN" in response.text:
                    print(
                        "(cannot follow the call: the admin API needs RECEIVER_ADMIN_TOKEN / --admin-token)"
                    )
                    return 0
            elif response.status_code == 200:
                view = response.json()
                parts = [f"state={view['state']}"]
                if view["analysis_id"]:
                    parts.append(f"analysis={view['analysis_id']}")
                if view["reason"]:
                    parts.append(f"reason={view['reason']!r}")
                parts += [f"{d['handler']}:{d['state']}" for d in view["deliveries"]]
                if tuple(parts) != last:
                    last = tuple(parts)
                    print("  " + " ".join(parts), flush=True)
                outcome = _outcome(view)
                if outcome is not None:
                    return outcome
            time.sleep(0.3)
    state = last[0].removeprefix("state=") if last else "unknown"
    print(f"  (still {state} after {wait:g}s; see 'kallglot-receiver calls show {session_id}')")
    return 1


def _outcome(view: dict[str, Any]) -> int | None:
    """None while the call is still going; else the exit code (0 only for a delivered success)."""
    dead = [d["handler"] for d in view["deliveries"] if d["state"] == "dead"]
    if dead:
        print(f"  dead-lettered delivery to {', '.join(dead)}: see 'kallglot-receiver dead-letters list'")
        return 1
    if view["state"] == "skipped":
        return 1
    if view["state"] == "delivered":
        return 1 if view.get("analysis_status") == "failed" else 0
    return None
