"""The console's safety over plain HTTP (both stores): login sets a signed HttpOnly SameSite=Strict
cookie, every POST needs the session's CSRF token, every page has a strict CSP and refuses framing,
and the token appears in no page or URL."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.integration.conftest import StackFactory
from tests.integration.harness import ADMIN_TOKEN, Stack

BASE = "/admin/console"


async def _login(stack: Stack, client: httpx.AsyncClient) -> str:
    page = await client.get(f"{stack.admin_url}{BASE}/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    answer = await client.post(
        f"{stack.admin_url}{BASE}/login", data={"csrf": csrf.group(1), "token": ADMIN_TOKEN}
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == BASE
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/admin/console" in cookie
    home = await client.get(f"{stack.admin_url}{BASE}")
    found = re.search(r'name="csrf" value="([^"]+)"', home.text)
    assert found is not None
    return found.group(1)


async def test_pages_need_a_login_and_carry_strict_security_headers(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        anonymous = await client.get(f"{stack.admin_url}{BASE}/calls")
        assert anonymous.status_code == 303
        assert anonymous.headers["location"] == f"{BASE}/login"
        await _login(stack, client)
        for path in ("", "/calls", "/dead-letters", "/handlers", "/calls?state=lost"):
            page = await client.get(f"{stack.admin_url}{BASE}{path}")
            assert page.status_code == 200, path
            assert "default-src 'self'" in page.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
            assert page.headers["x-frame-options"] == "DENY"
            assert ADMIN_TOKEN not in page.text
            assert "<script" not in page.text
            assert "style=" not in page.text


async def test_a_wrong_token_or_a_forged_cookie_does_not_log_in(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        page = await client.get(f"{stack.admin_url}{BASE}/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        wrong = await client.post(
            f"{stack.admin_url}{BASE}/login", data={"csrf": csrf.group(1), "token": "nope"}
        )
        assert wrong.status_code == 401
    forged = httpx.AsyncClient(cookies={"krc_session": "eyJjc3JmIjoieCIsImF1dGgiOnRydWV9.x.y"})
    async with forged:
        assert (await forged.get(f"{stack.admin_url}{BASE}/calls")).status_code == 303


async def test_every_post_needs_the_sessions_csrf_token(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        csrf = await _login(stack, client)
        for path, data in (
            ("/handlers/sink/pause", {}),
            ("/handlers/sink/pause", {"csrf": "guess"}),
            ("/replay", {"delivery_id": "dlv_x"}),
            ("/logout", {}),
        ):
            answer = await client.post(f"{stack.admin_url}{BASE}{path}", data=data)
            assert answer.status_code == 403, path
        paused = await client.post(f"{stack.admin_url}{BASE}/handlers/sink/pause", data={"csrf": csrf})
        assert paused.status_code == 303
    listing = await stack.http.get(
        f"{stack.admin_url}/admin/handlers", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert {h["name"]: h["paused"] for h in listing.json()["data"]} == {"files": False, "sink": True}


async def test_the_call_page_shows_kallglots_request_id_of_each_start_attempt(stack: Stack) -> None:
    await stack.call_ended("sess_rid1")
    await stack.wait_state("sess_rid1", "delivered")
    view = (
        await stack.http.get(
            f"{stack.admin_url}/admin/calls/sess_rid1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
    ).json()
    request_id = view["attempts"][0]["kallglot_request_id"]
    assert str(request_id).startswith("req_")
    async with httpx.AsyncClient() as client:
        await _login(stack, client)
        page = await client.get(f"{stack.admin_url}{BASE}/calls/sess_rid1")
    assert page.status_code == 200
    assert "Kallglot request id" in page.text
    assert f'<td class="mono">{request_id}</td>' in page.text


async def test_the_call_page_shows_a_filtered_delivery(make_stack: StackFactory, tmp_path: Path) -> None:
    never = {"name": "never", "type": "file", "path": f"{tmp_path}/never/", "when": "call.crm == 'x'"}
    stack = await make_stack(handlers=[{"name": "files", "type": "file", "path": f"{tmp_path}/out/"}, never])
    await stack.session_ended("sess_console_filtered1")
    await stack.wait_state("sess_console_filtered1", "delivered")
    async with httpx.AsyncClient() as client:
        await _login(stack, client)
        page = await client.get(f"{stack.admin_url}{BASE}/calls/sess_console_filtered1")
    assert page.status_code == 200
    assert '<td>never</td><td class="state-filtered">filtered</td>' in page.text
    assert '<td>files</td><td class="state-delivered">delivered</td>' in page.text
