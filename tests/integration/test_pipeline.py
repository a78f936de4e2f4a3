"""End to end through real servers: a call ends, exactly one analysis runs, the result is delivered."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from receiver.sandbox import DEV_WEBHOOK_SECRET
from receiver.signing import standard_webhooks_key, standard_webhooks_signature
from tests.integration.conftest import StackFactory
from tests.integration.harness import SINK_SECRET, Stack, metric_value, wait_for


async def test_a_call_ended_by_kallglot_is_analysed_once_and_delivered_to_every_handler(stack: Stack) -> None:
    response = await stack.session_ended("sess_happy1")
    assert response.status_code == 200
    assert response.json() == {"status": "accepted"}

    view = await stack.wait_state("sess_happy1", "delivered")

    assert stack.charged("sess_happy1") == 1
    assert view["finished_via"] == "webhook"
    assert {d["handler"]: d["state"] for d in view["deliveries"]} == {
        "files": "delivered",
        "sink": "delivered",
    }
    [doc] = stack.delivered_files()
    assert doc["type"] == "call.analysis.completed"
    assert doc["session_id"] == "sess_happy1"
    assert doc["analysis"]["status"] == "completed"
    assert doc["call"] == {"duration_seconds": 245.3}
    [sent] = stack.sink.received
    assert {**sent, "id": None} == {**doc, "id": None}
    assert sent["id"] != doc["id"]  # one delivery id per (call, handler)


async def test_the_webhook_handler_signs_with_standard_webhooks_and_a_stable_id(stack: Stack) -> None:
    await stack.session_ended("sess_signed1")
    await stack.wait_state("sess_signed1", "delivered")

    [headers] = stack.sink.headers
    [doc] = stack.sink.received
    assert headers["webhook-id"] == doc["id"]
    body = json.dumps(doc, separators=(",", ":")).encode()
    expected = standard_webhooks_signature(
        standard_webhooks_key(SINK_SECRET), headers["webhook-id"], int(headers["webhook-timestamp"]), body
    )
    assert headers["webhook-signature"] == f"v1,{expected}"


async def test_telephony_fields_travel_with_the_call_to_every_handler(stack: Stack) -> None:
    response = await stack.call_ended(
        "sess_tel1",
        call_id="CA42",
        direction="outbound",
        **{"from": "+14155550100", "to": "+14155550199"},
        metadata={"crm_contact_id": "123"},
        agent={"id": "u_1", "email": "agent@example.com"},
    )
    assert response.status_code == 200, response.text

    await stack.wait_state("sess_tel1", "delivered")

    [doc] = stack.delivered_files()
    assert doc["call"]["call_id"] == "CA42"
    assert doc["call"]["from"] == "+14155550100"
    assert doc["call"]["metadata"] == {"crm_contact_id": "123"}
    assert doc["call"]["agent"]["email"] == "agent@example.com"


async def test_the_same_event_five_times_concurrently_costs_one_credit(stack: Stack) -> None:
    responses = await asyncio.gather(
        *(stack.session_ended("sess_dup1", event_id="evt_same") for _ in range(5))
    )

    assert sorted(r.json()["status"] for r in responses) == [
        "accepted",
        "duplicate",
        "duplicate",
        "duplicate",
        "duplicate",
    ]
    await stack.wait_state("sess_dup1", "delivered")
    assert stack.charged("sess_dup1") == 1
    assert len(stack.sink.received) == 1


async def test_the_same_call_from_both_endpoints_and_many_events_is_one_call(stack: Stack) -> None:
    calls = [stack.session_ended("sess_both1") for _ in range(3)]
    calls += [stack.call_ended("sess_both1", direction="inbound") for _ in range(3)]
    responses = await asyncio.gather(*calls)
    assert all(r.status_code == 200 for r in responses)
    assert sum(r.json()["status"] == "accepted" for r in responses) == 1

    view = await stack.wait_state("sess_both1", "delivered")

    assert stack.charged("sess_both1") == 1
    assert stack.stats()["analysis_posts"] >= 1
    assert view["call"]["direction"] == "inbound"
    assert len(stack.delivered_files()) == 1


async def test_a_late_duplicate_after_delivery_changes_nothing(stack: Stack) -> None:
    await stack.session_ended("sess_late1")
    await stack.wait_state("sess_late1", "delivered")

    again = await stack.session_ended("sess_late1")
    await stack.call_ended("sess_late1")

    assert again.json()["status"] == "merged"
    # Deliberate: nothing happens when all is well, so there is no condition to wait for; give a
    # wrongly woken starter (the duplicate wakes it) a few of its 0.05 s ticks to misbehave.
    await asyncio.sleep(0.3)
    assert stack.charged("sess_late1") == 1
    assert len(stack.sink.received) == 1


async def test_dropped_analysis_webhooks_are_completed_by_polling(make_stack: StackFactory) -> None:
    stack = await make_stack(sandbox={"webhook_drop_rate": 1.0})

    await stack.session_ended("sess_poll1")
    view = await stack.wait_state("sess_poll1", "delivered")

    assert view["finished_via"] == "poll"
    assert stack.charged("sess_poll1") == 1
    assert (
        metric_value(
            await stack.metrics(), "receiver_analyses_finished_total", status="completed", via="poll"
        )
        == 1
    )


async def test_a_webhook_without_the_result_makes_the_receiver_fetch_it(make_stack: StackFactory) -> None:
    stack = await make_stack(sandbox={"webhook_include_result": False}, poll_after_seconds=60)

    await stack.session_ended("sess_fetch1")
    view = await stack.wait_state("sess_fetch1", "delivered")

    assert view["finished_via"] == "webhook"
    [doc] = stack.delivered_files()
    assert doc["analysis"]["summary"]


async def test_the_old_result_shape_is_accepted(make_stack: StackFactory) -> None:
    stack = await make_stack(sandbox={"result_shape": "old"})

    await stack.session_ended("sess_old1")
    await stack.wait_state("sess_old1", "delivered")

    [doc] = stack.delivered_files()
    assert doc["analysis"]["status"] == "complete"
    assert "results" in doc["analysis"]


async def test_a_failed_analysis_goes_to_handlers_that_ask_for_failures(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    handlers = [
        {
            "name": "files",
            "type": "file",
            "path": f"{tmp_path}/deliveries/",
            "events": ["completed", "failed"],
        },
        {"name": "only-completed", "type": "file", "path": f"{tmp_path}/other/"},
    ]
    stack = await make_stack(sandbox={"analysis_failure_rate": 1.0}, handlers=handlers)

    await stack.session_ended("sess_fail1")
    view = await stack.wait_state("sess_fail1", "delivered")

    assert view["analysis_status"] == "failed"
    assert [d["handler"] for d in view["deliveries"]] == ["files"]
    [doc] = stack.delivered_files()
    assert doc["type"] == "call.analysis.failed"
    assert doc["analysis"]["error"]


async def test_an_unknown_session_fails_the_call_with_a_reason_and_no_retry(make_stack: StackFactory) -> None:
    stack = await make_stack(sandbox={"missing_sessions": ["sess_gone1"]})

    await stack.session_ended("sess_gone1")
    view = await stack.wait_state("sess_gone1", "delivered")

    assert view["analysis_status"] == "failed"
    assert "404" in view["reason"]
    assert view["start_attempts"] == 1
    assert stack.charged("sess_gone1") == 0


async def test_a_rate_limit_storm_loses_nothing_and_spends_one_credit_per_call(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(sandbox={"rate_limit": 5, "rate_limit_window_seconds": 1.0})
    sessions = [f"sess_storm{i}" for i in range(25)]

    await asyncio.gather(*(stack.session_ended(s) for s in sessions))
    for session in sessions:
        await stack.wait_state(session, "delivered", timeout=30)

    stats = stack.stats()
    assert all(stats["charged_by_session"][s] == 1 for s in sessions)
    assert len(stack.sink.received) == 25


async def test_credits_exhausted_pause_starting_and_it_resumes_by_itself(make_stack: StackFactory) -> None:
    stack = await make_stack(sandbox={"credits": 0})

    await stack.session_ended("sess_broke1")
    text = await wait_for(lambda: _paused(stack), timeout=10, what="receiver_credits_paused to become 1")
    assert text
    assert await stack.state("sess_broke1") == "starting"

    # a few probes while still broke (the first POST and two probes): each is refused, none is charged
    await wait_for(lambda: stack.stats()["analysis_posts"] >= 3, timeout=10, what="two probes while broke")
    assert stack.stats()["credits_charged"] == 0
    assert await stack.state("sess_broke1") == "starting"
    stack.sandbox.update_config({"credits": 10})

    await stack.wait_state("sess_broke1", "delivered", timeout=15)
    assert stack.charged("sess_broke1") == 1
    assert metric_value(await stack.metrics(), "receiver_credits_paused") == 0


async def _paused(stack: Stack) -> bool:
    return metric_value(await stack.metrics(), "receiver_credits_paused") == 1


async def test_the_credit_reserve_keeps_calls_queued_without_spending(make_stack: StackFactory) -> None:
    stack = await make_stack(sandbox={"credits": 3}, credit_reserve=5)

    await stack.session_ended("sess_reserve1")
    await wait_for(lambda: _paused(stack), timeout=10, what="the reserve to pause starting")

    async def reason() -> str:
        # The gate pauses before the call's reason is written: wait for the reason too.
        view = await stack.call("sess_reserve1")
        return str((view or {}).get("reason") or "")

    assert "RECEIVER_CREDIT_RESERVE" in await wait_for(reason, timeout=10, what="the call's reason")
    assert stack.charged("sess_reserve1") == 0


async def test_short_calls_are_skipped_without_a_credit(make_stack: StackFactory) -> None:
    stack = await make_stack(min_duration_seconds=10)

    await stack.call_ended("sess_short1", duration_seconds=4)
    view = await stack.wait_state("sess_short1", "skipped")

    assert "RECEIVER_MIN_DURATION_SECONDS" in view["reason"]
    assert stack.charged("sess_short1") == 0
    assert stack.stats()["analysis_posts"] == 0


async def test_kallglot_errors_and_lost_answers_are_retried_without_a_second_credit(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(sandbox={"error_rate": 0.3, "error_after_effect_rate": 0.5})
    sessions = [f"sess_flaky{i}" for i in range(10)]

    await asyncio.gather(*(stack.session_ended(s) for s in sessions))
    for session in sessions:
        await stack.wait_state(session, "delivered", timeout=40)

    charged = stack.stats()["charged_by_session"]
    assert [charged[s] for s in sessions] == [1] * 10


async def test_a_handler_outage_is_retried_until_the_destination_recovers(make_stack: StackFactory) -> None:
    stack = await make_stack()
    stack.sink.fail_with = 503

    await stack.session_ended("sess_outage1")
    await wait_for(lambda: stack.sink.attempts >= 3, what="three failed attempts")
    assert await stack.state("sess_outage1") == "completed"
    stack.sink.fail_with = None

    await stack.wait_state("sess_outage1", "delivered", timeout=15)
    assert stack.sink.ids() == ["sess_outage1"]
    assert stack.charged("sess_outage1") == 1


async def test_a_permanent_failure_is_dead_lettered_and_replay_delivers_without_a_new_analysis(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    stack.sink.fail_with = 400
    await stack.session_ended("sess_dead1")
    await wait_for(lambda: _dead_letters(stack), what="a dead letter")
    listing = await stack.http.get(
        f"{stack.admin_url}/admin/dead-letters", headers={"Authorization": "Bearer test-admin-token"}
    )
    [dead] = listing.json()["dead_letters"]
    assert dead["handler"] == "sink"
    assert "400" in dead["last_error"]

    stack.sink.fail_with = None
    replay = await stack.http.post(
        f"{stack.admin_url}/admin/dead-letters/replay",
        json={"handler": "sink"},
        headers={"Authorization": "Bearer test-admin-token"},
    )

    assert replay.json() == {"replayed": 1}
    await stack.wait_state("sess_dead1", "delivered")
    assert stack.sink.ids() == ["sess_dead1"]
    assert stack.charged("sess_dead1") == 1
    assert stack.stats()["analysis_posts"] == 1


async def _dead_letters(stack: Stack) -> bool:
    return (
        metric_value(
            await stack.metrics(), "receiver_deliveries_total", handler="sink", outcome="dead_lettered"
        )
        >= 1
    )


async def test_when_filters_and_field_policies_shape_what_each_handler_gets(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    handlers = [
        {"name": "files", "type": "file", "path": f"{tmp_path}/deliveries/", "fields": ["analysis.summary"]},
        {
            "name": "never",
            "type": "file",
            "path": f"{tmp_path}/never/",
            "when": "analysis.compliance.status == 'x'",
        },
    ]
    stack = await make_stack(handlers=handlers)

    await stack.session_ended("sess_shape1")
    view = await stack.wait_state("sess_shape1", "delivered")

    # Both handlers subscribe to completed results; "never"'s when is evaluated at delivery time.
    assert {d["handler"]: d["state"] for d in view["deliveries"]} == {
        "files": "delivered",
        "never": "filtered",
    }
    [doc] = stack.delivered_files()
    assert set(doc) == {"type", "id", "session_id", "analysis"}
    assert set(doc["analysis"]) == {"summary"}


async def test_metrics_expose_credits_rate_limits_and_outcomes(stack: Stack) -> None:
    await stack.session_ended("sess_metrics1")
    await stack.wait_state("sess_metrics1", "delivered")
    text = await stack.metrics()

    assert metric_value(text, "kallglot_api_credits_remaining") == stack.stats()["credits_remaining"]
    assert metric_value(text, "kallglot_api_credits_used") >= 1
    assert metric_value(text, "kallglot_api_ratelimit_limit") > 0
    assert metric_value(text, "receiver_analyses_started_total") == 1
    assert (
        metric_value(
            text, "receiver_events_total", source="kallglot", type="session.ended", outcome="accepted"
        )
        == 1
    )
    assert metric_value(text, "receiver_deliveries_total", handler="sink", outcome="delivered") == 1
    assert metric_value(text, "kallglot_api_requests_total", operation="start_analysis", status="202") == 1
    assert "sess_metrics1" not in text
    assert DEV_WEBHOOK_SECRET not in text


async def test_a_burst_is_paced_from_the_rate_limit_headers_so_429s_stay_rare(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(
        sandbox={"rate_limit": 20, "rate_limit_window_seconds": 1.0}, poll_after_seconds=30
    )
    sessions = [f"sess_paced{i}" for i in range(60)]

    await asyncio.gather(*(stack.session_ended(s) for s in sessions))
    for session in sessions:
        await stack.wait_state(session, "delivered", timeout=30)

    stats = stack.stats()
    assert all(stats["charged_by_session"][s] == 1 for s in sessions)
    # Sixty POSTs through 25 per 3 s take three windows; pacing keeps the refusals to a few per window.
    assert stats["status_counts"].get("429", 0) <= 6, stats["status_counts"]
