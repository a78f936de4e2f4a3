"""Any PBX on /events/call-ended (JMESPath mapping, bearer token) and the provider-disconnected trigger."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx

from receiver.signing import sign_standard_webhooks
from tests.integration.conftest import StackFactory
from tests.integration.harness import INBOUND_SECRET, Stack
from tests.integration.telephony_support import kallglot_provider_event

BEARER = "pbx-bearer-token-0123456789"
# FreeSWITCH's mod_json_cdr / a hang-up event: variables carry what the dialplan set.
MAPPING = {
    "session_id": "variables.kallglot_session_id",
    "call_id": "variables.uuid",
    "from": "variables.caller_id_number",
    "to": "variables.destination_number",
    "direction": "variables.direction",
    "duration_seconds": "variables.billsec",
    "ended_at": "variables.end_stamp",
}


def freeswitch_cdr(session_id: str) -> dict[str, Any]:
    return {
        "core-uuid": "4b7b0d64-5c8c-4b0f-9a6b-6f2d0b0c1e2a",
        "variables": {
            "kallglot_session_id": session_id,
            "uuid": "a1b2c3d4-0000-4000-8000-000000000001",
            "caller_id_number": "+14155550100",
            "destination_number": "+14155550199",
            "direction": "inbound",
            "billsec": "87",
            "end_stamp": "2026-03-26 11:04:20",
            "hangup_cause": "NORMAL_CLEARING",
        },
    }


async def post(stack: Stack, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return await stack.http.post(f"{stack.url}/events/call-ended", content=json.dumps(body), headers=headers)


async def test_a_pbx_hangup_event_is_mapped_and_accepted_with_a_bearer_token(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(call_ended_mapping=json.dumps(MAPPING), inbound_bearer_token=BEARER)
    auth = {"Authorization": f"Bearer {BEARER}"}
    response = await post(stack, freeswitch_cdr("sess_pbx1"), auth)
    assert response.status_code == 200, response.text
    assert (await post(stack, freeswitch_cdr("sess_pbx1"), auth)).json()["status"] == "duplicate"

    await stack.wait_state("sess_pbx1", "delivered")
    assert stack.charged("sess_pbx1") == 1
    [doc] = stack.delivered_files()
    assert doc["call"] == {
        "call_id": "a1b2c3d4-0000-4000-8000-000000000001",
        "from": "+14155550100",
        "to": "+14155550199",
        "direction": "inbound",
        "duration_seconds": 87.0,
        "ended_at": "2026-03-26 11:04:20",
    }


async def test_a_wrong_bearer_token_is_401(make_stack: StackFactory) -> None:
    stack = await make_stack(call_ended_mapping=json.dumps(MAPPING), inbound_bearer_token=BEARER)
    response = await post(
        stack, freeswitch_cdr("sess_pbx2"), {"Authorization": "Bearer not-the-token-at-all"}
    )
    assert response.status_code == 401
    assert await stack.call("sess_pbx2") is None


async def test_a_body_the_mapping_finds_no_session_in_is_400(make_stack: StackFactory) -> None:
    stack = await make_stack(call_ended_mapping=json.dumps(MAPPING), inbound_bearer_token=BEARER)
    response = await post(stack, {"variables": {}}, {"Authorization": f"Bearer {BEARER}"})
    assert response.status_code == 400
    assert "session_id" in response.json()["error"]["message"]


async def test_our_own_signed_body_keeps_working_beside_a_bearer_token(make_stack: StackFactory) -> None:
    stack = await make_stack(inbound_bearer_token=BEARER)
    body = json.dumps({"session_id": "sess_pbx3", "from": "+1"}).encode()
    headers = sign_standard_webhooks(INBOUND_SECRET, f"msg_{uuid.uuid4().hex}", int(time.time()), body)
    response = await stack.http.post(f"{stack.url}/events/call-ended", content=body, headers=headers)
    assert response.status_code == 200
    await stack.wait_state("sess_pbx3", "delivered")


async def test_session_provider_disconnected_can_be_the_trigger(make_stack: StackFactory) -> None:
    stack = await make_stack(trigger="session.provider.disconnected")
    assert (await stack.session_ended("sess_trig1")).json() == {"status": "ignored"}
    assert await kallglot_provider_event(stack, "sess_trig2", "CA_trig2") == 200
    await stack.wait_state("sess_trig2", "delivered")
    assert stack.charged("sess_trig2") == 1
    assert await stack.call("sess_trig1") is None
