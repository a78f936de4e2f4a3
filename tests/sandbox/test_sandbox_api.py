"""The emulated Kallglot API over a real server: idempotency, credits, limits, shapes, errors, stats."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from .support import FakeClock, Running, fast_config, plain_client, wait_for

Launch = Callable[..., Awaitable[Running]]
BODY = {"profile": "default", "include": ["summary", "compliance"]}


async def post_analysis(
    client: httpx.AsyncClient, session: str = "sess_a1", key: str | None = None, body: Any = BODY
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return await client.post(f"/v1/sessions/{session}/analysis", json=body, headers=headers)


def assert_error(response: httpx.Response, status: int, code: str, type_: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["X-Request-ID"]
    if type_ is not None:
        assert error["type"] == type_


async def test_analysis_post_is_accepted_charged_and_reported_in_headers(launch: Launch) -> None:
    run = await launch()
    response = await post_analysis(run.client)
    assert response.status_code == 202
    body = response.json()
    assert body["id"].startswith("anl_")
    assert body | {"id": "x", "created_at": "x"} == {
        "id": "x",
        "object": "analysis",
        "session_id": "sess_a1",
        "status": "processing",
        "profile": "default",
        "created_at": "x",
    }
    assert response.headers["X-API-Credits-Remaining"] == "999"
    assert response.headers["X-API-Credits-Used"] == "1"
    assert response.headers["X-RateLimit-Limit"] == "600"
    assert response.headers["X-RateLimit-Remaining"] == "599"
    assert int(response.headers["X-RateLimit-Reset"]) > 0
    assert response.headers["X-Request-ID"].startswith("req_")


async def test_same_key_and_body_replays_without_a_second_credit(launch: Launch) -> None:
    run = await launch()
    first = await post_analysis(run.client, key="analysis-sess_a1")
    again = await post_analysis(run.client, key="analysis-sess_a1")
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert again.headers["X-API-Credits-Used"] == "1"
    stats = await run.stats()
    assert stats["analysis_posts"] == 2
    assert stats["analyses_created"] == 1
    assert stats["charged_by_session"] == {"sess_a1": 1}


async def test_no_key_means_a_new_analysis_and_a_new_credit_each_time(launch: Launch) -> None:
    run = await launch()
    ids = {(await post_analysis(run.client)).json()["id"] for _ in range(3)}
    assert len(ids) == 3
    stats = await run.stats()
    assert (stats["credits_charged"], stats["credits_remaining"]) == (3, 997)
    assert stats["charged_by_session"] == {"sess_a1": 3}


async def test_same_key_with_another_body_is_an_idempotency_mismatch(launch: Launch) -> None:
    run = await launch()
    await post_analysis(run.client, key="k1")
    other = await post_analysis(run.client, key="k1", body={"include": ["summary"]})
    assert_error(other, 400, "idempotency_mismatch", "invalid_request_error")
    elsewhere = await post_analysis(run.client, session="sess_other", key="k1")
    assert_error(elsewhere, 400, "idempotency_mismatch")
    assert (await run.stats())["credits_charged"] == 1


async def test_same_key_while_the_first_is_processing_is_a_conflict(launch: Launch) -> None:
    run = await launch(fast_config(response_delay_seconds=0.3))
    first = asyncio.create_task(post_analysis(run.client, key="k1"))
    await wait_for(lambda: len(run.sandbox.state.idempotency) == 1, what="the first request's claim")
    second = await post_analysis(run.client, key="k1")
    assert_error(second, 409, "idempotency_conflict", "invalid_request_error")
    assert int(second.headers["Retry-After"]) >= 1
    assert second.json()["error"]["retry_after"] >= 1
    assert (await first).status_code == 202
    replay = await post_analysis(run.client, key="k1")
    assert replay.json() == (await first).json()
    assert (await run.stats())["credits_charged"] == 1


async def test_accepted_but_answered_500_is_saved_by_the_idempotency_key(launch: Launch) -> None:
    run = await launch(fast_config(error_after_effect_rate=1.0))
    failed = await post_analysis(run.client, key="k1")
    assert failed.status_code == 500
    await run.client.patch("/_sandbox/config", json={"error_after_effect_rate": 0})
    retried = await post_analysis(run.client, key="k1")
    assert retried.status_code == 202
    stats = await run.stats()
    assert (stats["analyses_created"], stats["credits_charged"]) == (1, 1)


async def test_error_rate_fails_before_any_effect(launch: Launch) -> None:
    run = await launch(fast_config(error_rate=1.0))
    responses = [await post_analysis(run.client, key=f"k{i}") for i in range(4)]
    assert {r.status_code for r in responses} <= {500, 503}
    assert (await run.stats())["credits_charged"] == 0


async def test_credits_run_out_with_402_and_headers(launch: Launch) -> None:
    run = await launch(fast_config(credits=2))
    assert (await post_analysis(run.client)).headers["X-API-Credits-Remaining"] == "1"
    last = await post_analysis(run.client)
    assert (last.headers["X-API-Credits-Remaining"], last.headers["X-API-Credits-Used"]) == ("0", "2")
    refused = await post_analysis(run.client, key="k")
    assert_error(refused, 402, "insufficient_api_credits", "permission_error")
    assert refused.headers["X-API-Credits-Remaining"] == "0"
    await run.client.patch("/_sandbox/config", json={"credits": 5})
    assert (await post_analysis(run.client, key="k")).status_code == 202
    assert (await run.client.get("/_sandbox/config")).json()["credits"] == 4


async def test_setting_the_credits_knob_in_process_tops_up(launch: Launch) -> None:
    run = await launch(fast_config(credits=0))
    assert (await post_analysis(run.client)).status_code == 402
    run.sandbox.config.credits = 1
    assert (await post_analysis(run.client)).headers["X-API-Credits-Remaining"] == "0"


async def test_inactive_organization_gets_403_and_spends_nothing(launch: Launch) -> None:
    run = await launch(fast_config(organization_active=False))
    assert_error(await post_analysis(run.client), 403, "organization_inactive")
    assert (await run.client.get("/v1/sessions/sess_a1")).status_code == 200
    assert (await run.stats())["credits_remaining"] == 1000


async def test_rate_limit_429_with_retry_after_until_the_window_resets(launch: Launch) -> None:
    clock = FakeClock()
    run = await launch(fast_config(rate_limit=2, rate_limit_window_seconds=30), clock=clock)
    assert (await run.client.get("/v1/sessions/sess_a1")).headers["X-RateLimit-Remaining"] == "1"
    assert (await run.client.get("/v1/sessions/sess_a1")).headers["X-RateLimit-Remaining"] == "0"
    clock.advance(10)
    limited = await post_analysis(run.client)
    assert_error(limited, 429, "rate_limit_exceeded", "rate_limit_error")
    assert limited.headers["Retry-After"] == "20"
    assert limited.headers["X-RateLimit-Reset"] == str(int(clock.now + 20))
    clock.advance(20)
    assert (await post_analysis(run.client)).status_code == 202
    assert (await run.stats())["status_counts"] == {"200": 2, "429": 1, "202": 1}


async def test_analysis_route_may_have_its_own_budget(launch: Launch) -> None:
    run = await launch(fast_config(analysis_rate_limit=1))
    assert (await post_analysis(run.client)).headers["X-RateLimit-Limit"] == "1"
    assert_error(await post_analysis(run.client), 429, "rate_limit_exceeded")
    assert (await run.client.get("/v1/sessions/sess_a1")).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic sk_test_x"}, {"X-API-Key": "pk_1"}],
    ids=["none", "bad-prefix", "not-bearer", "bad-x-api-key"],
)
async def test_bad_api_key_is_401(launch: Launch, headers: dict[str, str]) -> None:
    run = await launch()
    async with plain_client(run.url, headers) as anonymous:
        response = await anonymous.get("/v1/sessions/sess_a1")
    assert_error(response, 401, "invalid_api_key", "authentication_error")
    assert "X-API-Credits-Remaining" not in response.headers


async def test_x_api_key_and_a_configured_key(launch: Launch) -> None:
    run = await launch(fast_config(api_key="sk_live_exact"))
    async with plain_client(run.url, {"X-API-Key": "sk_live_exact"}) as keyed:
        assert (await keyed.get("/v1/sessions/sess_a1")).status_code == 200
    assert (await run.client.get("/v1/sessions/sess_a1")).status_code == 401


@pytest.mark.parametrize(
    "path",
    [
        "/v1/sessions/call_123",
        "/v1/sessions/sess_gone",
        "/v1/sessions/sess_gone/transcript",
        "/v1/analyses/anl_nope",
        "/v1/analysis/ana_nope",
        "/v1/nothing-here",
    ],
)
async def test_unknown_things_are_404(launch: Launch, path: str) -> None:
    run = await launch(fast_config(missing_sessions=["sess_gone"]))
    assert_error(await run.client.get(path), 404, "not_found")


async def test_missing_session_analysis_is_404_and_free(launch: Launch) -> None:
    run = await launch(fast_config(missing_sessions=["sess_gone"]))
    assert_error(await post_analysis(run.client, session="sess_gone", key="k"), 404, "not_found")
    assert_error(await run.client.post("/v1/sessions/sess_gone/end"), 404, "not_found")
    assert (await run.stats())["credits_charged"] == 0


@pytest.mark.parametrize(
    ("content", "status"),
    [(b"{not json", 400), (b"[1]", 400), (b'{"include": ["mood"]}', 422), (b'{"profile": 3}', 422)],
    ids=["not-json", "not-object", "bad-include", "bad-profile"],
)
async def test_invalid_analysis_bodies(launch: Launch, content: bytes, status: int) -> None:
    run = await launch()
    response = await run.client.post("/v1/sessions/sess_a1/analysis", content=content)
    assert response.status_code == status
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert (await run.stats())["credits_charged"] == 0


async def test_new_shape_result_has_only_what_was_included(launch: Launch) -> None:
    run = await launch()
    created = (await post_analysis(run.client, session="sess_review_1")).json()
    result = (await run.client.get(f"/v1/analyses/{created['id']}")).json()
    assert result["status"] == "completed"
    assert isinstance(result["summary"], str)
    assert result["compliance"]["status"] == "review"
    assert result["compliance"]["flags"]
    assert {"sentiment", "performance", "keywords"}.isdisjoint(result)
    assert (result["call_id"], result["error"], result["profile"]) == (None, None, "default")
    assert result["completed_at"] is not None
    assert (await run.client.get(f"/v1/analysis/{created['id']}")).json() == result


async def test_old_shape_uses_results_wrapper_and_complete(launch: Launch) -> None:
    run = await launch(fast_config(result_shape="old"))
    created = await post_analysis(run.client, body={"include": ["summary", "sentiment", "performance"]})
    assert created.status_code == 202
    assert created.json()["id"].startswith("ana_")
    result = (await run.client.get(f"/v1/analysis/{created.json()['id']}")).json()
    assert result["status"] == "complete"
    assert set(result["results"]) == {"summary", "action_items", "sentiment", "quality"}
    assert isinstance(result["results"]["sentiment"]["overall"], float)


async def test_analysis_is_processing_until_latency_passes_then_completes(launch: Launch) -> None:
    clock = FakeClock()
    run = await launch(fast_config(analysis_latency_seconds=5), clock=clock)
    analysis_id = (await post_analysis(run.client)).json()["id"]
    pending = (await run.client.get(f"/v1/analyses/{analysis_id}")).json()
    assert (pending["status"], pending["completed_at"]) == ("processing", None)
    assert "summary" not in pending
    clock.advance(5)
    assert (await run.client.get(f"/v1/analyses/{analysis_id}")).json()["status"] == "completed"


async def test_failed_analysis_has_error_text(launch: Launch) -> None:
    run = await launch(fast_config(analysis_failure_rate=1.0))
    analysis_id = (await post_analysis(run.client)).json()["id"]
    result = (await run.client.get(f"/v1/analyses/{analysis_id}")).json()
    assert result["status"] == "failed"
    assert isinstance(result["error"], str)
    assert result["error"]
    assert "summary" not in result


async def test_transcript_not_ready_is_a_409_until_the_delay_passes(launch: Launch) -> None:
    clock = FakeClock()
    run = await launch(fast_config(transcript_delay_seconds=10), clock=clock)
    early = await post_analysis(run.client, key="k")
    assert_error(early, 409, "transcript_not_ready")
    assert early.headers["Retry-After"] == "10"
    transcript = (await run.client.get("/v1/sessions/sess_a1/transcript")).json()
    assert transcript["status"] == "in_progress"
    clock.advance(10)
    assert (await post_analysis(run.client, key="k")).status_code == 202
    assert (await run.client.get("/v1/sessions/sess_a1/transcript")).json()["status"] == "completed"


async def test_session_transcript_and_end(launch: Launch) -> None:
    run = await launch()
    session = (await run.client.get("/v1/sessions/sess_demo1")).json()
    assert (session["id"], session["object"], session["status"]) == ("sess_demo1", "session", "ended")
    assert session["duration"] > 0
    assert session["started_at"] < session["ended_at"]
    transcript = (await run.client.get("/v1/sessions/sess_demo1/transcript")).json()
    assert transcript["id"] == "trn_sess_demo1"
    assert transcript["metadata"]["total_turns"] == len(transcript["turns"]) > 0
    first = (await run.client.post("/v1/sessions/sess_demo1/end")).json()
    second = (await run.client.post("/v1/sessions/sess_demo1/end")).json()
    assert first == second
    assert first["duration_seconds"] == session["duration"]


async def test_response_delay_slows_every_api_response(launch: Launch) -> None:
    run = await launch(fast_config(response_delay_seconds=0.2))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await run.client.get("/v1/sessions/sess_a1")
    assert loop.time() - started >= 0.2


async def test_stats_count_routes_and_statuses_and_reset_keeps_config(launch: Launch) -> None:
    run = await launch(fast_config(credits=3))
    await post_analysis(run.client)
    await run.client.get("/v1/sessions/sess_a1")
    stats = await run.stats()
    assert stats["requests_by_route"] == {
        "POST /v1/sessions/{id}/analysis": 1,
        "GET /v1/sessions/{id}": 1,
    }
    assert stats["status_counts"] == {"202": 1, "200": 1}
    await run.client.patch("/_sandbox/config", json={"rate_limit": 5})
    reset = (await run.client.post("/_sandbox/reset")).json()
    assert (reset["analysis_posts"], reset["credits_charged"], reset["requests_by_route"]) == (0, 0, {})
    assert reset["credits_remaining"] == 2  # the balance is a knob, and reset keeps knobs
    assert (await run.client.get("/_sandbox/config")).json()["rate_limit"] == 5


async def test_config_patch_validates_and_changes_nothing_on_error(launch: Launch) -> None:
    run = await launch()
    bad = await run.client.patch("/_sandbox/config", json={"error_rate": 2, "credits": 1})
    assert bad.status_code == 422
    assert bad.json()["error"]["param"] == "error_rate"
    assert (await run.client.patch("/_sandbox/config", json={"nope": 1})).status_code == 422
    config = (await run.client.get("/_sandbox/config")).json()
    assert (config["error_rate"], config["credits"]) == (0, 1000)
    ok = await run.client.patch("/_sandbox/config", json={"result_shape": "old"})
    assert ok.json()["result_shape"] == "old"
    assert run.sandbox.config.result_shape == "old"


async def test_webhook_url_must_be_http(launch: Launch) -> None:
    run = await launch()
    response = await run.client.patch("/_sandbox/config", json={"webhook_url": "ftp://example.com/hook"})
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "webhook_url"
