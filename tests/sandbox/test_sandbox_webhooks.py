"""Webhooks the sandbox sends: envelope, signature, Kallglot's retries, drop/duplicate knobs, end-call."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest

from receiver.sandbox import DEV_WEBHOOK_SECRET, SandboxConfig
from receiver.signing import verify_kallglot

from .support import FakeClock, Received, Running, WebhookSink, fast_config, plain_client, wait_for

Launch = Callable[..., Awaitable[Running]]
Sink = tuple[WebhookSink, str]
UNREACHABLE = "http://127.0.0.1:9/hook"  # the discard port: nothing listens


def verify(received: Received, *, now: float, tolerance: float = 5) -> None:
    header = received.headers["kallglot-signature"]
    verify_kallglot(header, received.body, [DEV_WEBHOOK_SECRET], tolerance_seconds=tolerance, now=now)


async def start_analysis(run: Running, session: str = "sess_w1", **body: object) -> str:
    response = await run.client.post(f"/v1/sessions/{session}/analysis", json=body)
    assert response.status_code == 202, response.text
    analysis_id: str = response.json()["id"]
    return analysis_id


async def test_analysis_complete_is_signed_and_carries_the_analysis(launch: Launch, sink: Sink) -> None:
    hooks, url = sink
    run = await launch(fast_config(webhook_url=url))
    analysis_id = await start_analysis(run)
    await wait_for(lambda: hooks.received, what="the webhook")
    [received] = hooks.received
    verify(received, now=time.time())
    assert received.headers["kallglot-webhook-id"].startswith("wh_del_")
    assert received.headers["kallglot-retry-count"] == "0"
    assert abs(int(received.headers["kallglot-original-timestamp"]) - time.time()) < 5
    event = received.event
    assert event["id"].startswith("evt_")
    assert (event["type"], event["api_version"]) == ("analysis.complete", "v1")
    assert event["created_at"].endswith("Z")
    fetched = (await run.client.get(f"/v1/analyses/{analysis_id}")).json()
    assert event["data"] == fetched
    assert event["data"]["status"] == "completed"


async def test_a_given_secret_signs_instead_of_the_dev_secret(launch: Launch, sink: Sink) -> None:
    hooks, url = sink
    run = await launch(fast_config(webhook_url=url, webhook_secret="s3cret"))
    await start_analysis(run)
    await wait_for(lambda: hooks.received, what="the webhook")
    received = hooks.received[0]
    header = received.headers["kallglot-signature"]
    assert verify_kallglot(header, received.body, ["s3cret"], tolerance_seconds=5, now=time.time())


async def test_failed_delivery_is_retried_with_the_same_event_and_a_growing_retry_count(
    launch: Launch, sink: Sink
) -> None:
    hooks, url = sink
    hooks.statuses = [500, 404]
    run = await launch(fast_config(webhook_url=url))
    await start_analysis(run)
    await wait_for(lambda: len(hooks.received) == 3, what="three attempts")
    assert [r.headers["kallglot-retry-count"] for r in hooks.received] == ["0", "1", "2"]
    assert len({r.body for r in hooks.received}) == 1
    assert len({r.headers["kallglot-webhook-id"] for r in hooks.received}) == 1
    assert len({r.headers["kallglot-original-timestamp"] for r in hooks.received}) == 1
    for r in hooks.received:
        verify(r, now=time.time())
    await wait_for(lambda: run.sandbox.stats()["webhooks_pending"] == 0, what="nothing pending")
    stats = await run.stats()
    counts = stats["webhooks_sent"], stats["webhooks_delivered"], stats["webhooks_failed_attempts"]
    assert counts == (1, 1, 2)


async def test_each_attempt_is_signed_afresh_on_kallglots_schedule(launch: Launch, sink: Sink) -> None:
    hooks, url = sink
    hooks.statuses = [503]
    clock = FakeClock()
    run = await launch(fast_config(webhook_url=url, webhook_retry_scale=1.0), clock=clock)
    await start_analysis(run)
    await wait_for(lambda: run.sandbox.stats()["webhooks_failed_attempts"] == 1, what="first attempt")
    assert len(hooks.received) == 1
    clock.advance(50)  # the second attempt is due about a minute later (with 10 % jitter)
    run.sandbox.dispatcher.wake()
    clock.advance(20)
    run.sandbox.dispatcher.wake()
    await wait_for(lambda: len(hooks.received) == 2, what="second attempt")
    first, second = hooks.received
    stamp = [int(r.headers["kallglot-signature"].split(",")[0].removeprefix("t=")) for r in hooks.received]
    assert stamp == [int(clock.now - 70), int(clock.now)]
    assert second.headers["kallglot-original-timestamp"] == first.headers["kallglot-original-timestamp"]
    verify(second, now=clock.now, tolerance=1)


async def test_delivery_gives_up_after_eight_attempts(launch: Launch, sink: Sink) -> None:
    hooks, url = sink
    hooks.statuses = [500] * 10
    run = await launch(fast_config(webhook_url=url, webhook_retry_scale=0.000001))
    await start_analysis(run)
    await wait_for(lambda: run.sandbox.stats()["webhooks_given_up"] == 1, what="giving up")
    assert [r.headers["kallglot-retry-count"] for r in hooks.received] == [str(n) for n in range(8)]
    assert run.sandbox.stats()["webhooks_pending"] == 0


@pytest.mark.parametrize("scheme", ["http", "https"], ids=["refused", "tls-to-plain-port"])
async def test_an_unreachable_endpoint_is_a_failed_attempt(launch: Launch, scheme: str) -> None:
    run = await launch(fast_config(webhook_url=f"{scheme}://127.0.0.1:9/hook", webhook_retry_scale=0.000001))
    await start_analysis(run)
    await wait_for(lambda: run.sandbox.stats()["webhooks_given_up"] == 1, what="giving up")
    assert run.sandbox.stats()["webhooks_failed_attempts"] == 8


async def test_a_slow_endpoint_times_out_and_is_retried(launch: Launch, sink: Sink) -> None:
    hooks, url = sink
    hooks.delays = [0.3]
    run = await launch(fast_config(webhook_url=url, webhook_timeout_seconds=0.05))
    await start_analysis(run)
    await wait_for(lambda: run.sandbox.stats()["webhooks_delivered"] == 1, what="delivery")
    assert [r.headers["kallglot-retry-count"] for r in hooks.received] == ["0", "1"]
    assert run.sandbox.stats()["webhooks_failed_attempts"] == 1


async def test_drop_rate_one_sends_no_analysis_webhook(launch: Launch, sink: Sink) -> None:
    hooks, url = sink
    run = await launch(fast_config(webhook_url=url, webhook_drop_rate=1.0))
    for n in range(3):
        await start_analysis(run, session=f"sess_drop{n}")
    await wait_for(lambda: run.sandbox.stats()["webhooks_dropped"] == 3, what="three drops")
    stats = await run.stats()
    assert (stats["webhooks_sent"], stats["webhooks_pending"]) == (0, 0)
    assert hooks.received == []


async def test_duplicate_rate_one_sends_every_event_twice(launch: Launch, sink: Sink) -> None:
    hooks, url = sink
    run = await launch(fast_config(webhook_url=url, webhook_duplicate_rate=1.0))
    await start_analysis(run)
    await wait_for(lambda: len(hooks.received) == 2, what="two deliveries")
    assert hooks.received[0].event == hooks.received[1].event
    ids = {r.headers["kallglot-webhook-id"] for r in hooks.received}
    assert len(ids) == 2


async def test_without_result_the_event_carries_only_the_identity(launch: Launch, sink: Sink) -> None:
    hooks, url = sink
    run = await launch(fast_config(webhook_url=url, webhook_include_result=False))
    analysis_id = await start_analysis(run)
    await wait_for(lambda: hooks.received, what="the webhook")
    assert hooks.received[0].event["data"] == {
        "id": analysis_id,
        "object": "analysis",
        "session_id": "sess_w1",
        "status": "completed",
    }


async def test_failed_analysis_sends_analysis_failed_with_error(launch: Launch, sink: Sink) -> None:
    hooks, url = sink
    run = await launch(fast_config(webhook_url=url, analysis_failure_rate=1.0))
    await start_analysis(run)
    await wait_for(lambda: hooks.received, what="the webhook")
    event = hooks.received[0].event
    assert event["type"] == "analysis.failed"
    assert (event["data"]["status"], bool(event["data"]["error"])) == ("failed", True)


async def test_old_shape_webhook_carries_the_old_analysis(launch: Launch, sink: Sink) -> None:
    hooks, url = sink
    run = await launch(fast_config(webhook_url=url, result_shape="old"))
    await start_analysis(run)
    await wait_for(lambda: hooks.received, what="the webhook")
    event = hooks.received[0].event
    assert event["type"] == "analysis.complete"
    assert (event["data"]["status"], "results" in event["data"]) == ("complete", True)


async def test_webhook_url_set_after_the_post_still_gets_the_result(launch: Launch, sink: Sink) -> None:
    hooks, url = sink
    clock = FakeClock()
    run = await launch(fast_config(analysis_latency_seconds=5), clock=clock)
    await start_analysis(run)
    await run.client.patch("/_sandbox/config", json={"webhook_url": url})
    clock.advance(5)
    run.sandbox.dispatcher.wake()
    await wait_for(lambda: hooks.received, what="the webhook")
    assert hooks.events()[0]["type"] == "analysis.complete"


async def test_end_call_sends_session_ended_then_transcript_ready(launch: Launch, sink: Sink) -> None:
    hooks, url = sink
    run = await launch(fast_config(webhook_url=url))
    response = await run.client.post("/_sandbox/sessions/sess_demo1/end-call")
    assert response.status_code == 200
    assert response.json()["session_url"] == f"{run.url}/v1/sessions/sess_demo1"
    await wait_for(lambda: len(hooks.received) == 2, what="two events")
    ended, ready = hooks.events()
    assert ended["type"] == "session.ended"
    assert (ended["data"]["id"], ended["data"]["status"]) == ("sess_demo1", "ended")
    assert ended["data"]["duration"] > 0
    assert ready["type"] == "transcript.ready"
    assert ready["data"]["session_id"] == "sess_demo1"
    assert ended["id"] != ready["id"]


async def test_end_call_for_an_unknown_session_is_404(launch: Launch) -> None:
    run = await launch(fast_config(webhook_url=UNREACHABLE, missing_sessions=["sess_gone"]))
    for session in ("sess_gone", "call_1"):
        response = await run.client.post(f"/_sandbox/sessions/{session}/end-call")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert run.sandbox.stats()["webhooks_pending"] == 0


async def test_no_webhook_url_sends_nothing(launch: Launch) -> None:
    run = await launch(SandboxConfig(analysis_latency_seconds=0))
    await start_analysis(run)
    await run.client.post("/_sandbox/sessions/sess_demo1/end-call")
    stats = await run.stats()
    assert (stats["webhooks_sent"], stats["webhooks_pending"]) == (0, 0)


async def test_mounted_sandbox_builds_urls_under_its_prefix_and_starts_explicitly(
    run_app: Callable[..., Awaitable[str]], sink: Sink
) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from receiver.sandbox import Sandbox

    hooks, hook_url = sink
    sandbox = Sandbox(fast_config(webhook_url=hook_url))
    await sandbox.start()
    await sandbox.start()
    try:
        url = await run_app(Starlette(routes=[Mount("/sandbox", app=sandbox.app)]))
        async with plain_client(f"{url}/sandbox", {"Authorization": "Bearer sk_test_x"}) as client:
            ended = (await client.post("/_sandbox/sessions/sess_m1/end-call")).json()
            assert ended["session_url"] == f"{url}/sandbox/v1/sessions/sess_m1"
            info = (await client.get("/_sandbox")).json()
            assert info["api_url"] == f"{url}/sandbox/v1"
            assert (await client.post("/v1/sessions/sess_m1/analysis", json={})).status_code == 202
            missing = await client.get("/v1/nope")
            assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
        await wait_for(lambda: len(hooks.received) == 3, what="three events")
    finally:
        await sandbox.aclose()
        await sandbox.aclose()
    assert {e["type"] for e in hooks.events()} == {"session.ended", "transcript.ready", "analysis.complete"}


async def test_reset_drops_pending_webhooks(launch: Launch) -> None:
    clock = FakeClock()
    config = fast_config(webhook_url=UNREACHABLE, analysis_latency_seconds=60)
    run = await launch(config, clock=clock)
    await start_analysis(run)
    assert run.sandbox.stats()["analyses_created"] == 1
    await run.client.post("/_sandbox/reset")
    clock.advance(60)
    run.sandbox.dispatcher.wake()
    stats = run.sandbox.stats()
    assert (stats["webhooks_pending"], stats["webhooks_sent"]) == (0, 0)
