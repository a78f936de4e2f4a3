"""Telnyx preset end to end: real Ed25519-signed webhooks into a real receiver, on both stores."""

from __future__ import annotations

import base64
import time

import pytest

from receiver.carriers import dev
from tests.integration.conftest import StackFactory
from tests.integration.harness import Stack, metric_value
from tests.integration.telephony_support import (
    CARRIERS,
    TELNYX_SEED,
    carrier_events,
    kallglot_provider_event,
    telnyx,
)


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack(**CARRIERS)


async def test_hangup_is_analysed_once_with_every_carrier_field_in_the_document(stack: Stack) -> None:
    payload = dev.telnyx_payload("sess_tx_ok1", "v3:ctrl-ok1", hangup_cause="user_busy", direction="outgoing")
    response = await telnyx(stack, payload)
    assert response.status_code == 200
    assert response.json() == {"status": "accepted", "session_id": "sess_tx_ok1"}

    await stack.wait_state("sess_tx_ok1", "delivered")
    assert stack.charged("sess_tx_ok1") == 1
    [doc] = stack.delivered_files()
    call, sent = doc["call"], payload["data"]["payload"]
    assert (call["carrier"], call["carrier_call_id"]) == ("telnyx", "v3:ctrl-ok1")
    assert (call["from"], call["to"], call["direction"]) == ("+14155550100", "+14155550199", "outbound")
    assert (call["hangup_cause"], call["hangup_source"]) == ("user_busy", "caller")
    assert (call["start_time"], call["end_time"], call["ended_at"]) == (
        sent["start_time"],
        sent["end_time"],
        sent["end_time"],
    )
    assert call["duration_seconds"] == 245.0
    assert call["carrier_session_id"] == sent["call_session_id"]
    assert stack.sink.received[0]["call"] == call
    text = await stack.metrics()
    assert metric_value(text, "receiver_events_total", source="telnyx", type="ended", outcome="accepted") == 1


async def test_a_signature_from_another_key_is_401(stack: Stack) -> None:
    other = base64.b64encode(b"o" * 32).decode()
    response = await telnyx(stack, dev.telnyx_payload("sess_tx_bad1", "v3:bad1"), seed=other)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "bad_signature"
    unsigned = await stack.http.post(
        f"{stack.url}/events/telnyx", json=dev.telnyx_payload("sess_tx_bad1", "x")
    )
    assert unsigned.status_code == 401
    assert await stack.call("sess_tx_bad1") is None


async def test_a_stale_timestamp_is_401(stack: Stack) -> None:
    payload = dev.telnyx_payload("sess_tx_old1", "v3:old1")
    response = await telnyx(stack, payload, timestamp=int(time.time()) - 301)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "stale_timestamp"
    assert await stack.call("sess_tx_old1") is None


async def test_a_replayed_webhook_is_a_duplicate(stack: Stack) -> None:
    payload = dev.telnyx_payload("sess_tx_dup1", "v3:dup1")
    assert (await telnyx(stack, payload)).json()["status"] == "accepted"
    assert (await telnyx(stack, payload)).json()["status"] == "duplicate"
    await stack.wait_state("sess_tx_dup1", "delivered")
    assert stack.charged("sess_tx_dup1") == 1


async def test_events_other_than_hangup_are_acknowledged_and_start_nothing(stack: Stack) -> None:
    for kind in ("call.initiated", "call.answered", "call.bridged"):
        response = await telnyx(stack, dev.telnyx_payload("sess_tx_live1", "v3:live1", event_type=kind))
        assert response.json() == {"status": "ignored", "session_id": "sess_tx_live1"}
    assert await stack.call("sess_tx_live1") is None


async def test_the_session_id_query_parameter_wins_over_client_state(stack: Stack) -> None:
    payload = dev.telnyx_payload("sess_tx_state1", "v3:q1")
    response = await telnyx(stack, payload, query="?session_id=sess_tx_query1")
    assert response.json()["session_id"] == "sess_tx_query1"
    await stack.wait_state("sess_tx_query1", "delivered")


async def test_an_unmatched_hangup_is_kept_and_matched_by_the_call_control_id(stack: Stack) -> None:
    response = await telnyx(stack, dev.telnyx_payload(None, "v3:late1"))
    assert response.json() == {"status": "unmatched", "session_id": None}
    assert [e["carrier_call_id"] for e in await carrier_events(stack)] == ["v3:late1"]
    assert await kallglot_provider_event(stack, "sess_tx_late1", "v3:late1", key="call_control_id") == 200
    await stack.wait_state("sess_tx_late1", "delivered")
    assert stack.charged("sess_tx_late1") == 1
    assert await carrier_events(stack) == []


async def test_a_malformed_but_signed_body_is_400(stack: Stack) -> None:
    payload = dev.telnyx_payload("sess_tx_mal1", "v3:mal1")
    del payload["data"]["payload"]["call_control_id"]
    response = await telnyx(stack, payload)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_event"


async def test_the_endpoint_is_404_until_its_key_is_set(make_stack: StackFactory) -> None:
    bare = await make_stack()
    response = await telnyx(bare, dev.telnyx_payload("sess_tx_off1", "v3:off1"))
    assert response.status_code == 404
    assert "RECEIVER_TELNYX_PUBLIC_KEY" in response.json()["error"]["message"]


async def test_hostile_inputs_get_a_4xx_with_a_json_error(stack: Stack) -> None:
    url = f"{stack.url}/events/telnyx"
    body, headers = dev.telnyx_request({"data": []}, TELNYX_SEED)
    not_an_event = await stack.http.post(url, content=body, headers=headers)
    body, headers = dev.telnyx_request({}, TELNYX_SEED)
    empty = await stack.http.post(url, content=body, headers=headers)
    not_json = await stack.http.post(
        url, content=b"{nope", headers={"telnyx-timestamp": "abc", "telnyx-signature-ed25519": "x"}
    )
    bad_session = await telnyx(stack, dev.telnyx_payload(None, "v3:h"), query="?session_id=%00")
    for response, status in ((not_an_event, 400), (empty, 400), (not_json, 401), (bad_session, 400)):
        assert response.status_code == status
        assert set(response.json()["error"]) == {"code", "message"}
