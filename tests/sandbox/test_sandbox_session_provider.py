"""The session's carrier leg (``provider`` object with the carrier's call id), set per session by a knob."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .support import Running

Launch = Callable[..., Awaitable[Running]]


async def test_a_session_without_a_leg_names_its_provider_as_a_string(launch: Launch) -> None:
    run = await launch()
    response = await run.client.get("/v1/sessions/sess_p1")
    assert response.status_code == 200
    assert response.json()["provider"] == "twilio"
    assert response.headers["X-Request-ID"].startswith("req_")


async def test_a_leg_set_through_the_knobs_is_the_sessions_provider_object(launch: Launch) -> None:
    run = await launch()
    legs = {
        "sess_p2": {"type": "twilio", "call_sid": "CA0123456789abcdef"},
        "sess_p3": {"type": "telnyx", "call_control_id": "v3:abc-123"},
    }
    patched = await run.client.patch("/_sandbox/config", json={"session_providers": legs})
    assert patched.status_code == 200, patched.text

    twilio = (await run.client.get("/v1/sessions/sess_p2")).json()
    telnyx = (await run.client.get("/v1/sessions/sess_p3")).json()
    other = (await run.client.get("/v1/sessions/sess_p4")).json()

    assert twilio["provider"] == {
        "type": "twilio",
        "call_sid": "CA0123456789abcdef",
        "phone_number": twilio["phone_number"],
        "status": "completed",
    }
    assert telnyx["provider"]["call_control_id"] == "v3:abc-123"
    assert "call_sid" not in telnyx["provider"]
    assert other["provider"] == "twilio"
    ended = await run.client.post("/_sandbox/sessions/sess_p2/end-call")
    assert ended.json()["session"]["provider"]["call_sid"] == "CA0123456789abcdef"


async def test_a_bad_leg_is_a_422_naming_the_field_and_changes_nothing(launch: Launch) -> None:
    run = await launch()
    bad = await run.client.patch(
        "/_sandbox/config", json={"session_providers": {"sess_p5": {"type": "fax", "call_sid": "CA1"}}}
    )
    assert bad.status_code == 422
    assert "session_providers" in bad.json()["error"]["message"]
    assert (await run.client.get("/_sandbox/config")).json()["session_providers"] == {}
