"""Operator commands beside a live service (issue 8 hole 3) and over its admin API (CONTRACT §9):
they change nothing they were not asked to change, and answer with exit codes scripts rely on."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path

import httpx

from tests.integration.conftest import StackFactory
from tests.integration.harness import ADMIN_TOKEN, Stack, wait_for
from tests.integration.test_cli import run

READS = [
    ["migrate"],
    ["calls", "show", "sess_live1"],
    ["calls", "show", "sess_live1", "--json"],
    ["calls", "list", "--json"],
    ["dead-letters", "list"],
    ["handlers", "list"],
    ["replays", "list"],
    ["migrate"],
]
# Every read command and migrate; each window below runs half of them at once (the CPU is small).


async def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run, args, env)


async def test_operator_commands_beside_a_live_serve_never_cause_a_second_post_or_delivery(
    make_stack: StackFactory, database: str
) -> None:
    # Slow answers keep the analysis POST and the webhook delivery in flight while commands run.
    stack = await make_stack(sandbox={"response_delay_seconds": 8.0})
    stack.sink.delay = 8.0
    env = {"RECEIVER_DATABASE_URL": database}
    await stack.session_ended("sess_live1")
    await wait_for(lambda: stack.stats()["analysis_posts"] >= 1, what="the analysis POST", timeout=10)

    during_post = await asyncio.gather(*(_cli(args, env) for args in READS[1::2]))
    posts_in_flight = await stack.state("sess_live1") == "starting"
    await wait_for(lambda: stack.sink.attempts >= 1, what="the webhook delivery", timeout=30)
    during_delivery = await asyncio.gather(*(_cli(args, env) for args in READS[::2]))
    deliveries_in_flight = not stack.sink.received
    await stack.wait_state("sess_live1", "delivered", timeout=30)

    assert all(r.returncode == 0 for r in during_post + during_delivery), [
        r.stderr for r in during_post + during_delivery
    ]
    assert (posts_in_flight, deliveries_in_flight) == (True, True)  # the test ran what it says
    assert stack.stats()["analysis_posts"] == 1
    assert stack.charged("sess_live1") == 1
    assert stack.sink.attempts == 1
    assert stack.sink.ids() == ["sess_live1"]


async def test_commands_over_the_admin_url_read_replay_and_pause(stack: Stack) -> None:
    env = {"RECEIVER_ADMIN_TOKEN": ADMIN_TOKEN}
    stack.sink.fail_with = 400
    await stack.session_ended("sess_url1")
    await wait_for(lambda: _has_dead(stack), what="a dead letter")
    stack.sink.fail_with = None

    listed = await _cli(["calls", "list", "--url", stack.admin_url, "--json"], env)
    shown = await _cli(["calls", "show", "sess_url1", "--url", stack.admin_url], env)
    missing = await _cli(["calls", "show", "sess_none", "--url", stack.admin_url], env)
    dead = await _cli(["dead-letters", "list", "--url", stack.admin_url, "--json"], env)
    no_filter = await _cli(["dead-letters", "replay", "--url", stack.admin_url], env)
    nosuch = await _cli(["dead-letters", "replay", "--handler", "nosuch", "--url", stack.admin_url], env)
    replayed = await _cli(
        ["dead-letters", "replay", "--handler", "sink", "--limit", "1", "--url", stack.admin_url], env
    )
    bad_token = await _cli(
        ["calls", "list", "--url", stack.admin_url], {"RECEIVER_ADMIN_TOKEN": "wrong-token-xyz"}
    )

    assert listed.returncode == 0
    assert json.loads(listed.stdout)["data"][0]["session_id"] == "sess_url1"
    assert shown.returncode == 0
    assert "delivery sink: dead" in shown.stdout
    assert re.search(r"start: started: analysis \S+ \[Kallglot request req_\w+\]", shown.stdout), shown.stdout
    assert (missing.returncode, missing.stderr.count("\n")) == (1, 1)
    assert [d["handler"] for d in json.loads(dead.stdout)] == ["sink"]
    assert no_filter.returncode == 2
    assert "--all" in no_filter.stderr
    assert nosuch.returncode == 2
    assert "nosuch" in nosuch.stderr
    assert replayed.returncode == 0
    assert "replayed: 1 of 1" in replayed.stdout
    assert bad_token.returncode == 2
    assert "401" in bad_token.stderr
    await stack.wait_state("sess_url1", "delivered")
    assert stack.charged("sess_url1") == 1

    stack.sink.fail_with = 400
    await stack.session_ended("sess_url2")
    dead_id = await wait_for(lambda: _dead_id(stack, "sess_url2"), what="a second dead letter")
    stack.sink.fail_with = None
    discarded = await _cli(["deliveries", "discard", dead_id, "--url", stack.admin_url], env)
    again = await _cli(["deliveries", "discard", dead_id, "--url", stack.admin_url], env)
    moved = await _cli(["deliveries", "move", dead_id, "--to", "files", "--url", stack.admin_url], env)
    nowhere = await _cli(["deliveries", "move", dead_id, "--to", "nosuch", "--url", stack.admin_url], env)
    assert discarded.returncode == 0, discarded.stderr
    assert "discarded: 1 of 1" in discarded.stdout
    assert (again.returncode, moved.returncode, nowhere.returncode) == (1, 1, 2)
    await stack.wait_state("sess_url2", "delivered")

    paused = await _cli(["handlers", "pause", "sink", "--url", stack.admin_url], env)
    resumed = await _cli(["handlers", "resume", "sink", "--url", stack.admin_url], env)
    starting = await _cli(["starting", "resume", "--url", stack.admin_url], env)
    assert (paused.returncode, resumed.returncode, starting.returncode) == (0, 0, 0)


async def test_calls_show_shows_a_filtered_delivery(make_stack: StackFactory, tmp_path: Path) -> None:
    never = "analysis.compliance.status == 'x'"
    stack = await make_stack(
        handlers=[
            {"name": "files", "type": "file", "path": f"{tmp_path}/deliveries/"},
            {"name": "never", "type": "file", "path": f"{tmp_path}/never/", "when": never},
        ]
    )
    await stack.session_ended("sess_filtered1")
    await stack.wait_state("sess_filtered1", "delivered")
    env = {"RECEIVER_ADMIN_TOKEN": ADMIN_TOKEN}

    shown = await _cli(["calls", "show", "sess_filtered1", "--url", stack.admin_url], env)
    as_json = await _cli(["calls", "show", "sess_filtered1", "--url", stack.admin_url, "--json"], env)

    assert (shown.returncode, as_json.returncode) == (0, 0), shown.stderr + as_json.stderr
    assert "delivery files: delivered after 1 attempt(s)" in shown.stdout
    assert "delivery never: filtered (its 'when' did not match: nothing was sent)" in shown.stdout
    view = json.loads(as_json.stdout)
    assert {d["handler"]: d["state"] for d in view["deliveries"]} == {
        "files": "delivered",
        "never": "filtered",
    }
    attempts = sorted((a["handler"], a["outcome"]) for a in view["attempts"] if a["kind"] == "delivery")
    assert attempts == [("files", "delivered"), ("never", "filtered")]


async def _has_dead(stack: Stack) -> bool:
    view = await stack.http.get(
        f"{stack.admin_url}/admin/calls/sess_url1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    return view.status_code == 200 and any(d["state"] == "dead" for d in view.json()["deliveries"])


async def test_send_exits_1_when_the_call_is_skipped(make_stack: StackFactory) -> None:
    stack = await make_stack(min_duration_seconds=10_000)
    result = await _cli(
        [
            "send",
            "session.ended",
            "--session",
            "sess_skip1",
            "--to",
            stack.url,
            "--admin-url",
            stack.admin_url,
            "--admin-token",
            ADMIN_TOKEN,
        ],
        {},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "state=skipped" in result.stdout
    assert stack.charged("sess_skip1") == 0


def test_version_is_the_package_version() -> None:
    from importlib.metadata import version

    result = run(["--version"])
    assert (result.returncode, result.stdout.strip()) == (
        0,
        f"kallglot-receiver {version('kallglot-receiver')}",
    )


def _serve_until(args: list[str], env: dict[str, str], cwd: Path, marker: str) -> tuple[str, bool]:
    """Start ``serve``, read its stderr until ``marker``; return what it printed and whether the
    port answered at that moment. The process is stopped afterwards."""
    import os
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "KALLGLOT_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "receiver", "serve", *args],
        env={**base, **env},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    seen, answered = "", False
    try:
        deadline = time.monotonic() + 60
        while marker not in seen and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            seen += line
        if "--port" in args:
            port = args[args.index("--port") + 1]
            try:
                answered = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
            except httpx.HTTPError:
                answered = False
    finally:
        process.terminate()
        process.wait(30)
        process.stderr.close()
    return seen, answered


def test_the_sandbox_banner_shows_the_real_address_once_the_port_is_bound(tmp_path: Path) -> None:
    from tests.pg import free_port

    port = free_port()
    env = {"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/r.db"}
    args = ["--sandbox", "--port", str(port), "--admin-port", str(free_port())]
    printed, answered = _serve_until(args, env, tmp_path, "results go to:")

    assert f"send session.ended --session sess_demo1 --to http://127.0.0.1:{port}" in printed
    assert answered
    assert "WARNING: no handler" not in printed  # the sandbox adds a file handler


def test_serve_without_handlers_warns_loudly(tmp_path: Path) -> None:
    from tests.pg import free_port

    env = {
        "RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/r.db",
        "KALLGLOT_API_KEY": "sk_test_0123456789abcdef0123",
        "KALLGLOT_WEBHOOK_SECRETS": "0123456789abcdef0123456789abcdef",
        "KALLGLOT_API_URL": "http://127.0.0.1:9/v1",
    }
    args = ["--port", str(free_port()), "--admin-port", str(free_port())]
    printed, _ = _serve_until(args, env, tmp_path, "delivered nowhere")
    assert "WARNING: no handler is configured" in printed


def test_check_config_shows_the_handler_that_serve_sandbox_adds(tmp_path: Path) -> None:
    result = run(["check-config", "--sandbox"], {"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/r.db"})
    assert result.returncode == 0, result.stderr
    assert '"type": "file"' in result.stdout
    assert "deliveries.jsonl" in result.stdout


async def _dead_id(stack: Stack, session: str) -> str | None:
    view = await stack.http.get(
        f"{stack.admin_url}/admin/calls/{session}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    dead = [d["id"] for d in view.json().get("deliveries", []) if d["state"] == "dead"]
    return dead[0] if dead else None
