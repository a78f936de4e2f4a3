"""The console in a real browser (Debian's chromium driven by Playwright; no browser download)
against a live ``serve --sandbox`` with delivered, skipped and dead-lettered calls: log in, filter,
open a call, dry-run a bulk replay, replay a dead letter and see it delivered, pause a handler.
Screenshots of each page go to ``docs/images/console-*.png``."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, async_playwright, expect

from receiver.commands.sandbox import DEV_INBOUND_SECRET
from receiver.commands.send import build_event
from receiver.sandbox import DEV_WEBHOOK_SECRET
from receiver.signing import sign_kallglot, sign_standard_webhooks
from tests.integration.harness import Sink, start_server, stop_server, wait_for
from tests.pg import free_port

CHROMIUM = "/usr/bin/chromium"
TOKEN = "console-test-admin-token"
IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
pytestmark = pytest.mark.timeout(180)


def _chromium() -> str:
    if not Path(CHROMIUM).exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"], env=env, check=False
        )
    if not Path(CHROMIUM).exists():
        pytest.fail("the console's browser tests need Debian's chromium (apt-get install chromium)")
    return CHROMIUM


class Live:
    """A ``serve --sandbox`` process, a failing-on-demand webhook sink, and helpers."""

    def __init__(self, url: str, admin_url: str, sink: Sink) -> None:
        self.url, self.admin_url, self.sink = url, admin_url, sink
        self.http = httpx.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {TOKEN}"})

    async def session_ended(self, session: str) -> None:
        body = json.dumps(build_event("session.ended", session, None, time.time())).encode()
        headers = {"Kallglot-Signature": sign_kallglot(DEV_WEBHOOK_SECRET, int(time.time()), body)}
        assert (
            await self.http.post(f"{self.url}/webhooks/kallglot", content=body, headers=headers)
        ).status_code == 200

    async def short_call(self, session: str) -> None:
        body = json.dumps({"session_id": session, "duration_seconds": 2, "from": "+14155550100"}).encode()
        headers = sign_standard_webhooks(
            DEV_INBOUND_SECRET, f"msg_{uuid.uuid4().hex}", int(time.time()), body
        )
        assert (
            await self.http.post(f"{self.url}/events/call-ended", content=body, headers=headers)
        ).status_code == 200

    async def view(self, session: str) -> dict[str, Any]:
        result: dict[str, Any] = (await self.http.get(f"{self.admin_url}/admin/calls/{session}")).json()
        return result

    async def wait(self, session: str, test: Any, what: str) -> None:
        async def reached() -> bool:
            view = await self.view(session)
            return "state" in view and bool(test(view))

        await wait_for(reached, timeout=30, what=what)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    sink = Sink()
    sink_server, sink_url = await start_server(sink.app())
    port, admin_port = free_port(), free_port()
    handlers = [
        {"name": "files", "type": "file", "path": str(tmp_path / "deliveries.jsonl")},
        {
            "name": "crm",
            "type": "webhook",
            "url": f"{sink_url}/hook",
            "secret": "whsec_" + "Y29uc29sZS10ZXN0LXNpbmstc2VjcmV0",
            "retry": {"initial_seconds": 0.05, "max_seconds": 0.1, "horizon_seconds": 1},
        },
    ]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "KALLGLOT_"))},
        "RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/receiver.db",
        "RECEIVER_ADMIN_TOKEN": TOKEN,
        "RECEIVER_HANDLERS": json.dumps(handlers),
        "RECEIVER_MIN_DURATION_SECONDS": "10",
        "RECEIVER_LOG_LEVEL": "WARNING",
    }
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "receiver",
            "serve",
            "--sandbox",
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    live = Live(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", sink)

    async def up() -> bool:
        try:
            return (await live.http.get(f"{live.admin_url}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        await wait_for(up, timeout=60, what="serve --sandbox to be ready")
        yield live
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 30)
        log.close()
        await live.http.aclose()
        await stop_server(sink_server)


async def _shot(page: Page, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(IMAGES / f"console-{name}.png"), full_page=True)


async def test_an_operator_works_through_the_console_in_a_real_browser(live: Live) -> None:
    # Calls in several states: delivered, skipped (too short), and two dead-lettered ones.
    await live.session_ended("sess_ok1")
    await live.short_call("sess_short1")
    await live.wait("sess_ok1", lambda v: v["state"] == "delivered", "a delivered call")
    live.sink.fail_with = 400
    before = live.sink.attempts
    for session in ("sess_dead1", "sess_dead2"):
        await live.session_ended(session)
        await live.wait(
            session, lambda v: any(d["state"] == "dead" for d in v["deliveries"]), "a dead letter"
        )
    live.sink.fail_with = None
    attempts = live.sink.attempts
    assert attempts == before + 2

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1366, "height": 800})
        try:
            # Log in: the token goes in a form, never in a URL, and the session cookie is HttpOnly.
            await page.goto(f"{live.admin_url}/admin/console")
            await expect(page).to_have_url(f"{live.admin_url}/admin/console/login")
            await _shot(page, "login")
            await page.get_by_label("Admin token").fill(TOKEN)
            await page.keyboard.press("Enter")
            await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
            assert TOKEN not in page.url
            assert TOKEN not in await page.content()
            cookies = await page.context.cookies()
            assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
                ("krc_session", True, "Strict")
            ]
            await _shot(page, "overview")

            # Filter the call list by state, then open a call and see its timeline.
            await page.get_by_role("link", name="Calls").click()
            await page.locator("#f-state").select_option("skipped")
            await page.get_by_role("button", name="Search").click()
            await expect(page.get_by_role("link", name="sess_short1")).to_be_visible()
            await expect(page.get_by_role("link", name="sess_ok1")).to_have_count(0)
            await _shot(page, "calls")
            await page.locator("#f-state").select_option("")
            await page.get_by_role("button", name="Search").click()
            await page.get_by_role("link", name="sess_ok1").click()
            await expect(page.get_by_role("heading", name="Timeline")).to_be_visible()
            await expect(page.get_by_text("delivered:crm")).to_be_visible()
            await _shot(page, "call")

            # Dead letters: a dry run of the bulk replay changes nothing; then replay one.
            await page.get_by_role("link", name="Dead letters").click()
            await expect(page.get_by_role("link", name="sess_dead1")).to_be_visible()
            await page.get_by_role("button", name="Replay every dead letter").click()
            await expect(page.get_by_role("status")).to_contain_text(
                "Dry run: 2 deliveries would be replayed"
            )
            assert live.sink.attempts == attempts  # a dry run sends nothing
            await page.get_by_role("button", name="Replay the dead letter of sess_dead1 to crm").click()
            await expect(page.get_by_role("status")).to_contain_text("Replayed 1 of 1")
            await live.wait("sess_dead1", lambda v: v["state"] == "delivered", "the replayed call delivered")
            assert live.sink.ids() == ["sess_ok1", "sess_dead1"]
            await page.reload()
            await expect(page.get_by_role("link", name="sess_dead1")).to_have_count(0)
            await _shot(page, "dead-letters")

            # Pause a handler: its work stays queued.
            await page.get_by_role("link", name="Handlers").click()
            await page.get_by_role("button", name="Pause crm").click()
            await expect(page.get_by_role("status")).to_contain_text("crm paused")
            await expect(page.get_by_role("button", name="Resume crm")).to_be_visible()
            await _shot(page, "handlers")
            await live.session_ended("sess_paused1")
            await live.wait(
                "sess_paused1",
                lambda v: (
                    {d["handler"]: d["state"] for d in v["deliveries"]}
                    == {"crm": "pending", "files": "delivered"}
                ),
                "the files delivery while crm is paused",
            )
            assert "sess_paused1" not in live.sink.ids()
        finally:
            await browser.close()
