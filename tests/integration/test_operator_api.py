"""The operator API (CONTRACT §9) against a live receiver, on both stores: list and filter calls,
one call in full, replay by ids and by query (dry run, replay log), pause/resume a handler,
resume starting; never a new analysis."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import StackFactory
from tests.integration.harness import ADMIN_TOKEN, Stack, wait_for

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def _get(stack: Stack, path: str, **params: Any) -> Any:
    response = await stack.http.get(f"{stack.admin_url}{path}", params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


async def _post(stack: Stack, path: str, body: dict[str, Any]) -> Any:
    response = await stack.http.post(f"{stack.admin_url}{path}", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


async def test_calls_are_listed_newest_first_filtered_and_paged(stack: Stack) -> None:
    for session in ("sess_l1", "sess_l2", "sess_l3"):
        await stack.call_ended(session, **{"from": f"+1555000{session[-1]}"})
        await stack.wait_state(session, "delivered")

    first = await _get(stack, "/admin/calls", limit=2)
    second = await _get(stack, "/admin/calls", limit=2, cursor=first["next_cursor"])
    by_phone = await _get(stack, "/admin/calls", phone="+15550002")
    by_state = await _get(stack, "/admin/calls", state="skipped,failed")

    assert [c["session_id"] for c in first["data"] + second["data"]] == ["sess_l3", "sess_l2", "sess_l1"]
    assert second["next_cursor"] is None
    assert [c["session_id"] for c in by_phone["data"]] == ["sess_l2"]
    assert by_state["data"] == []
    assert {d["handler"]: d["state"] for d in first["data"][0]["deliveries"]} == {
        "files": "delivered",
        "sink": "delivered",
    }
    assert "call" not in first["data"][0]  # no personal data in lists


async def test_one_call_shows_its_timeline_and_hides_personal_data_by_default(stack: Stack) -> None:
    await stack.call_ended("sess_one1", **{"from": "+14155550100"})
    await stack.wait_state("sess_one1", "delivered")

    view = await _get(stack, "/admin/calls/sess_one1")

    assert [s["stage"] for s in view["stages"]] == [
        "received",
        "started",
        "finished",
        "delivered:files",
        "delivered:sink",
    ]
    assert all(s["seconds"] is not None and s["seconds"] >= 0 for s in view["stages"])
    assert view["call"]["from"] == "(hidden)"
    assert "+14155550100" not in str(view)
    assert "documents" not in view


async def test_personal_data_and_documents_are_shown_only_when_enabled(make_stack: StackFactory) -> None:
    stack = await make_stack(admin_show_personal_data=True)
    await stack.call_ended("sess_pd1", **{"from": "+14155550100"})
    await stack.wait_state("sess_pd1", "delivered")

    view = await _get(stack, "/admin/calls/sess_pd1")

    assert view["call"]["from"] == "+14155550100"
    assert view["documents"]["sink"]["session_id"] == "sess_pd1"


async def test_a_dead_letter_replayed_by_id_is_delivered_without_a_new_analysis(stack: Stack) -> None:
    stack.sink.fail_with = 400
    await stack.session_ended("sess_rp1")
    dead = await wait_for(lambda: _dead(stack, "sess_rp1"), what="a dead letter")
    stack.sink.fail_with = None

    dry = await _post(stack, "/admin/replay", {"delivery_ids": [dead], "dry_run": True})
    answer = await _post(stack, "/admin/replay", {"delivery_ids": [dead], "who": "alice"})

    assert (dry["matched"], dry["replayed"]) == (1, 0)
    assert (answer["matched"], answer["replayed"]) == (1, 1)
    await stack.wait_state("sess_rp1", "delivered")
    attempts = [
        (a["kind"], a["handler"], a["outcome"])
        for a in (await _get(stack, "/admin/calls/sess_rp1"))["attempts"]
    ]
    assert attempts[0] == ("start", None, "started")
    # Kallglot's X-Request-ID of the answer that started it (the sandbox sends one on every answer).
    start = (await _get(stack, "/admin/calls/sess_rp1"))["attempts"][0]
    assert str(start["kallglot_request_id"]).startswith("req_")
    assert attempts.count(("delivery", "sink", "dead")) == 1
    assert attempts[-1] in {("delivery", "sink", "delivered"), ("delivery", "files", "delivered")}
    assert ("delivery", "sink", "delivered") in attempts
    assert stack.sink.ids() == ["sess_rp1"]
    assert stack.charged("sess_rp1") == 1
    log = (await _get(stack, "/admin/replays"))["data"]
    assert [(r["replay_id"], r["who"], r["dry_run"]) for r in log] == [
        (answer["replay_id"], "alice", False),
        (dry["replay_id"], log[1]["who"], True),
    ]
    assert log[1]["who"].startswith("token:")
    assert ADMIN_TOKEN not in log[1]["who"]


async def _dead(stack: Stack, session: str) -> str | None:
    view = (await stack.http.get(f"{stack.admin_url}/admin/calls/{session}", headers=AUTH)).json()
    dead = [d["id"] for d in view.get("deliveries", []) if d["state"] == "dead"]
    return dead[0] if dead else None


async def test_replay_by_query_resends_delivered_calls_to_one_handler(stack: Stack) -> None:
    for session in ("sess_q1", "sess_q2"):
        await stack.session_ended(session)
        await stack.wait_state(session, "delivered")
    body = {"query": {"state": "delivered", "session_id": "sess_q1"}, "handlers": ["sink"]}

    dry = await _post(stack, "/admin/replay", {**body, "dry_run": True})
    answer = await _post(stack, "/admin/replay", body)

    assert (dry["matched"], dry["replayed"], answer["replayed"]) == (1, 0, 1)
    await wait_for(lambda: stack.sink.ids().count("sess_q1") == 2, what="the re-send")
    await stack.wait_state("sess_q1", "delivered")
    assert sorted(stack.sink.ids()) == ["sess_q1", "sess_q1", "sess_q2"]
    assert stack.stats()["analysis_posts"] == 2


async def test_a_paused_handler_keeps_its_work_queued_until_resumed(stack: Stack) -> None:
    await _post(stack, "/admin/handlers/sink/pause", {"who": "bob"})
    await stack.session_ended("sess_pause1")
    await wait_for(lambda: len(stack.delivered_files()) == 1, what="the files delivery")
    handlers = (await _get(stack, "/admin/handlers"))["data"]
    view = await _get(stack, "/admin/calls/sess_pause1")

    assert {h["name"]: h["paused_by"] for h in handlers} == {"files": None, "sink": "bob"}
    assert {d["handler"]: d["state"] for d in view["deliveries"]}["sink"] == "pending"
    assert stack.sink.attempts == 0

    await _post(stack, "/admin/handlers/sink/resume", {})
    await stack.wait_state("sess_pause1", "delivered")
    assert stack.sink.ids() == ["sess_pause1"]


async def test_bad_operator_input_is_a_4xx_never_a_500(stack: Stack) -> None:
    cases = [
        ("GET", "/admin/dead-letters?limit=²", None, 400),
        ("GET", "/admin/calls?limit=²", None, 400),
        ("GET", "/admin/calls?cursor=nonsense", None, 400),
        ("GET", "/admin/calls?state=lost", None, 400),
        ("GET", "/admin/calls?since=yesterday", None, 400),
        ("GET", "/admin/calls/sess_none", None, 404),
        ("POST", "/admin/replay", {"query": {}, "handlers": ["nosuch"]}, 400),
        ("POST", "/admin/replay", {"delivery_ids": "x"}, 400),
        ("POST", "/admin/replay", {}, 400),
        ("POST", "/admin/handlers/nosuch/pause", {}, 404),
        ("POST", "/admin/deliveries/move", {"delivery_ids": ["x"], "handler": "nosuch"}, 400),
    ]
    for method, path, body, status in cases:
        response = await stack.http.request(method, f"{stack.admin_url}{path}", json=body, headers=AUTH)
        assert response.status_code == status, (path, response.text)
        assert "error" in response.json()
    unauthorized = await stack.http.get(f"{stack.admin_url}/admin/calls")
    assert unauthorized.status_code == 401


async def test_starting_can_be_resumed_by_an_operator(stack: Stack) -> None:
    assert await _post(stack, "/admin/starting/resume", {}) == {"starting": "resumed"}


async def test_the_kallglot_request_ids_of_the_start_and_of_the_poll_that_finished_are_kept(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(sandbox={"webhook_drop_rate": 1.0})  # no webhook: a poll finishes the call
    await stack.session_ended("sess_rid2")
    await stack.wait_state("sess_rid2", "delivered")

    view = await _get(stack, "/admin/calls/sess_rid2")

    assert view["finished_via"] == "poll"
    kallglot = [
        (a["kind"], a["outcome"], a["kallglot_request_id"])
        for a in view["attempts"]
        if a["kind"] != "delivery"
    ]
    assert [(kind, outcome) for kind, outcome, _ in kallglot] == [("start", "started"), ("poll", "completed")]
    ids = [request_id for _, _, request_id in kallglot]
    assert all(str(i).startswith("req_") for i in ids), ids
    assert ids[0] != ids[1]
    assert all(a["kallglot_request_id"] is None for a in view["attempts"] if a["kind"] == "delivery")


async def test_a_refused_start_keeps_the_request_id_of_kallglots_error_answer(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(sandbox={"error_rate": 1.0})  # every answer a 500 or 503
    await stack.session_ended("sess_rid3")

    async def retried() -> list[dict[str, Any]]:
        view = await _get(stack, "/admin/calls/sess_rid3")
        return [a for a in view["attempts"] if (a["kind"], a["outcome"]) == ("start", "retry")]

    await wait_for(retried, what="a start attempt answered with a 5xx")
    stack.sandbox.update_config({"error_rate": 0.0})
    await stack.wait_state("sess_rid3", "delivered")

    attempts = (await _get(stack, "/admin/calls/sess_rid3"))["attempts"]
    starts = [a for a in attempts if a["kind"] == "start"]
    assert [a["outcome"] for a in starts][-1] == "started"
    refused = starts[0]
    assert refused["outcome"] == "retry"
    assert refused["code"] in (500, 503)
    assert str(refused["kallglot_request_id"]).startswith("req_")
    assert len({a["kallglot_request_id"] for a in starts}) == len(starts)
    assert stack.charged("sess_rid3") == 1
