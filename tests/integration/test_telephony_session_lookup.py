"""The carrier mapping learned from ``GET /v1/sessions/{id}`` (issue 11), end to end on both stores:
a Twilio callback that names no session is kept unmatched, and is matched, with one analysis, once
Kallglot's session object names the carrier call (``provider.call_sid``, set in the sandbox)."""

from __future__ import annotations

from receiver.carriers import dev
from tests.integration.conftest import StackFactory
from tests.integration.harness import metric_value
from tests.integration.telephony_support import CARRIERS, call_sid, carrier_events, twilio

SESSION = "sess_tw_lookup1"


async def test_an_unmatched_callback_is_matched_by_the_sessions_provider_call_sid(
    make_stack: StackFactory,
) -> None:
    sid = call_sid()
    stack = await make_stack(
        sandbox={"session_providers": {SESSION: {"type": "twilio", "call_sid": sid}}},
        min_duration_seconds=1,
        **CARRIERS,
    )
    response = await twilio(stack, dev.twilio_params(None, sid))
    assert response.json() == {"status": "unmatched", "session_id": None}
    [kept] = await carrier_events(stack)
    assert (kept["carrier_call_id"], kept["matched"]) == (sid, False)
    assert metric_value(await stack.metrics(), "receiver_carrier_events_unmatched") == 1
    assert stack.stats()["analysis_posts"] == 0

    # The PBX's call-ended event names only the session, without a duration: the minimum-duration check
    # reads the session object, which names the carrier call.
    assert (await stack.call_ended(SESSION)).status_code == 200
    await stack.wait_state(SESSION, "delivered")

    assert await carrier_events(stack) == []
    [matched] = await carrier_events(stack, SESSION)
    assert (matched["carrier_call_id"], matched["matched"]) == (sid, True)
    assert metric_value(await stack.metrics(), "receiver_carrier_events_unmatched") == 0
    assert stack.stats()["analysis_posts"] == 1
    assert stack.charged(SESSION) == 1
    # a later leg of the same carrier call now maps by itself, and starts nothing new
    again = await twilio(stack, dev.twilio_params(None, sid, SequenceNumber="9"))
    assert again.json()["session_id"] == SESSION
    assert stack.charged(SESSION) == 1
