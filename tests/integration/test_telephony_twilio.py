"""Twilio preset end to end: real signed status callbacks into a real receiver, on both stores."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import pytest

from receiver.carriers import dev
from tests.integration.conftest import StackFactory
from tests.integration.harness import Stack, metric_value
from tests.integration.telephony_support import (
    CARRIERS,
    call_sid,
    carrier_events,
    kallglot_provider_event,
    twilio,
)


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack(**CARRIERS)


async def test_completed_call_is_analysed_once_with_every_carrier_field_in_the_document(stack: Stack) -> None:
    sid = call_sid()
    params = dev.twilio_params("sess_tw_ok1", sid, Direction="outbound-api", CallDuration="61")
    response = await twilio(stack, params)
    assert response.status_code == 200
    assert response.json() == {"status": "accepted", "session_id": "sess_tw_ok1"}

    await stack.wait_state("sess_tw_ok1", "delivered")
    assert stack.charged("sess_tw_ok1") == 1
    [doc] = stack.delivered_files()
    call = doc["call"]
    assert call["carrier"] == "twilio"
    assert call["carrier_call_id"] == sid
    assert (call["from"], call["to"], call["direction"]) == ("+14155550100", "+14155550199", "outbound")
    assert call["duration_seconds"] == 61.0
    assert call["hangup_cause"] == "completed"
    assert call["ended_at"] == parsedate_to_datetime(params["Timestamp"]).isoformat().replace("+00:00", "Z")
    assert stack.sink.received[0]["call"] == call
    text = await stack.metrics()
    assert metric_value(text, "receiver_events_total", source="twilio", outcome="accepted") == 1


async def test_a_wrong_auth_token_is_401_and_nothing_is_kept(stack: Stack) -> None:
    params = dev.twilio_params("sess_tw_bad1", call_sid())
    response = await twilio(stack, params, token="another-token-of-enough-length")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "bad_signature"
    missing = await stack.http.post(f"{stack.url}/events/twilio", data=params)
    assert missing.status_code == 401
    assert await stack.call("sess_tw_bad1") is None
    text = await stack.metrics()
    assert metric_value(text, "receiver_events_total", source="twilio", outcome="bad_signature") == 2


async def test_a_replayed_callback_is_a_duplicate_and_costs_nothing(stack: Stack) -> None:
    params = dev.twilio_params("sess_tw_dup1", call_sid())
    token = {"I-Twilio-Idempotency-Token": "idem-1"}
    assert (await twilio(stack, params, headers=token)).json()["status"] == "accepted"
    assert (await twilio(stack, params, headers=token)).json()["status"] == "duplicate"
    # without the idempotency token: CallSid + CallStatus + SequenceNumber
    assert (await twilio(stack, params)).json()["status"] == "merged"
    assert (await twilio(stack, params)).json()["status"] == "duplicate"
    await stack.wait_state("sess_tw_dup1", "delivered")
    assert stack.charged("sess_tw_dup1") == 1


async def test_behind_a_proxy_the_signature_covers_the_public_url(make_stack: StackFactory) -> None:
    stack = await make_stack(**CARRIERS, public_url="https://calls.example.com/")
    params = dev.twilio_params(None, call_sid())
    query = "?session_id=sess_tw_proxy1"
    local = await twilio(stack, params, query=query)
    assert local.status_code == 401
    other_path = await twilio(
        stack, params, query=query, signed_url="https://calls.example.com/events/twilio"
    )
    assert other_path.status_code == 401  # the query string is signed too
    public = await twilio(
        stack, params, query=query, signed_url=f"https://calls.example.com/events/twilio{query}"
    )
    assert public.status_code == 200
    assert public.json()["session_id"] == "sess_tw_proxy1"
    await stack.wait_state("sess_tw_proxy1", "delivered")


async def test_non_final_statuses_are_acknowledged_and_start_nothing(stack: Stack) -> None:
    sid = call_sid()
    for status in ("queued", "initiated", "ringing", "in-progress"):
        response = await twilio(stack, dev.twilio_params("sess_tw_live1", sid, status, SequenceNumber=status))
        assert response.json() == {"status": "ignored", "session_id": "sess_tw_live1"}
    assert await stack.call("sess_tw_live1") is None
    assert [e["kind"] for e in await carrier_events(stack, "sess_tw_live1")] == ["live"] * 4


async def test_calls_that_never_connected_are_skipped_with_the_reason_and_no_credit(stack: Stack) -> None:
    for n, status in enumerate(("busy", "failed", "no-answer", "canceled")):
        session = f"sess_tw_skip{n}"
        response = await twilio(stack, dev.twilio_params(session, call_sid(), status))
        assert response.json() == {"status": "skipped", "session_id": session}
        view = await stack.call(session)
        assert view is not None
        assert (view["state"], view["reason"]) == ("skipped", f"twilio CallStatus={status}")
        assert view["call"]["hangup_cause"] == status
    assert stack.stats()["analysis_posts"] == 0


async def test_an_unmatched_callback_is_kept_and_matched_when_kallglot_names_the_call(stack: Stack) -> None:
    sid = call_sid()
    response = await twilio(stack, dev.twilio_params(None, sid))
    assert response.json() == {"status": "unmatched", "session_id": None}
    [kept] = await carrier_events(stack)
    assert (kept["carrier_call_id"], kept["matched"]) == (sid, False)
    assert metric_value(await stack.metrics(), "receiver_carrier_events_unmatched") == 1
    assert (
        metric_value(await stack.metrics(), "receiver_events_total", source="twilio", outcome="unmatched")
        == 1
    )
    assert stack.stats()["analysis_posts"] == 0

    assert await kallglot_provider_event(stack, "sess_tw_late1", sid) == 200

    await stack.wait_state("sess_tw_late1", "delivered")
    assert stack.charged("sess_tw_late1") == 1
    assert await carrier_events(stack) == []
    [matched] = await carrier_events(stack, "sess_tw_late1")
    assert matched["matched"] is True
    assert metric_value(await stack.metrics(), "receiver_carrier_events_unmatched") == 0
    [doc] = stack.delivered_files()
    assert doc["call"]["carrier_call_id"] == sid
    # a later leg of the same carrier call now maps by itself
    again = await twilio(stack, dev.twilio_params(None, sid, SequenceNumber="9"))
    assert again.json() == {"status": "merged", "session_id": "sess_tw_late1"}


async def test_two_legs_of_one_session_produce_one_analysis_after_the_last_leg(stack: Stack) -> None:
    session, first, second = "sess_tw_legs1", call_sid(), call_sid()
    for sid in (first, second):
        await twilio(stack, dev.twilio_params(session, sid, "in-progress", SequenceNumber="1"))
    ended = await twilio(stack, dev.twilio_params(session, first, CallDuration="30", From="+1111"))
    assert ended.json()["status"] == "accepted"
    # The second leg is still live: the call waits. Another call going all the way through proves
    # the starter had its chances meanwhile.
    await twilio(stack, dev.twilio_params("sess_tw_other1", call_sid()))
    await stack.wait_state("sess_tw_other1", "delivered")
    view = await stack.call(session)
    assert view is not None
    assert view["state"] == "received"
    assert stack.charged(session) == 0

    last = await twilio(stack, dev.twilio_params(session, second, CallDuration="90", From="+2222"))
    assert last.json()["status"] == "merged"
    await stack.wait_state(session, "delivered")
    assert stack.charged(session) == 1
    docs = [d for d in stack.delivered_files() if d["session_id"] == session]
    assert len(docs) == 1
    assert (docs[0]["call"]["carrier_call_id"], docs[0]["call"]["from"]) == (second, "+2222")


async def test_end_session_ends_the_kallglot_session_before_the_analysis(make_stack: StackFactory) -> None:
    stack = await make_stack(**CARRIERS, twilio_end_session=True, sandbox={"transcript_delay_seconds": 0.3})
    await twilio(stack, dev.twilio_params("sess_tw_end1", call_sid()))
    await stack.wait_state("sess_tw_end1", "delivered", timeout=20)
    routes = stack.stats()["requests_by_route"]
    assert routes["POST /v1/sessions/{id}/end"] == 1
    # the transcript was not ready at first: retried, not failed, and charged once
    assert routes["POST /v1/sessions/{id}/analysis"] >= 2
    assert stack.charged("sess_tw_end1") == 1


async def test_the_endpoint_is_404_until_its_token_is_set(make_stack: StackFactory) -> None:
    bare = await make_stack()
    response = await twilio(bare, dev.twilio_params("sess_tw_off1", call_sid()))
    assert response.status_code == 404
    assert "RECEIVER_TWILIO_AUTH_TOKEN" in response.json()["error"]["message"]


async def test_a_nul_character_in_a_field_is_stored_without_it(make_stack: StackFactory) -> None:
    # The admin view hides phone numbers unless RECEIVER_ADMIN_SHOW_PERSONAL_DATA is on.
    stack = await make_stack(**CARRIERS, admin_show_personal_data=True)
    response = await twilio(stack, dev.twilio_params("sess_tw_nul1", call_sid(), From="+1415\x00555"))
    assert response.status_code == 200
    view = await stack.call("sess_tw_nul1")
    assert view is not None
    assert view["call"]["from"] == "+1415555"


async def test_a_busy_transfer_leg_then_the_callers_leg_make_one_analysis(stack: Stack) -> None:
    session = "sess_tw_busy_then_ok1"
    busy = await twilio(stack, dev.twilio_params(session, call_sid(), "busy"))
    assert busy.json()["status"] == "skipped"
    done = await twilio(stack, dev.twilio_params(session, call_sid(), CallDuration="120"))
    assert done.json()["status"] == "accepted"
    await stack.wait_state(session, "delivered")
    assert stack.charged(session) == 1
    [doc] = stack.delivered_files()
    assert doc["call"]["duration_seconds"] == 120.0


async def test_the_settle_time_delays_the_start(make_stack: StackFactory) -> None:
    stack = await make_stack(**CARRIERS, call_settle_seconds=3)
    await twilio(stack, dev.twilio_params("sess_tw_settle1", call_sid()))
    await stack.call_ended("sess_tw_other2")  # not a carrier event: no settle time
    await stack.wait_state("sess_tw_other2", "delivered")
    view = await stack.call("sess_tw_settle1")
    assert view is not None
    assert view["state"] == "received"
    await stack.wait_state("sess_tw_settle1", "delivered", timeout=15)
    assert stack.charged("sess_tw_settle1") == 1


async def test_hostile_inputs_get_a_4xx_with_a_json_error(stack: Stack) -> None:
    url = f"{stack.url}/events/twilio"
    bad_session = await twilio(stack, dev.twilio_params(None, call_sid()), query="?session_id=../../etc")
    no_sid = await twilio(stack, {"CallStatus": "completed"})
    not_utf8 = await stack.http.post(url, content=b"\xff\xfe=\x00", headers={"X-Twilio-Signature": "x"})
    huge = await stack.http.post(url, content=b"a=" + b"x" * 2_000_000, headers={"X-Twilio-Signature": "x"})
    for response, status in ((bad_session, 400), (no_sid, 400), (not_utf8, 400), (huge, 413)):
        assert response.status_code == status
        assert set(response.json()["error"]) == {"code", "message"}
