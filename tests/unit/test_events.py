"""Inbound event parsing: both documented shapes, strict where we act, lenient elsewhere."""

from __future__ import annotations

import json
from typing import Any

import pytest

from receiver.events import InvalidEvent, parse_call_ended, parse_kallglot_event


def _event(type_: str, data: Any, **extra: Any) -> bytes:
    return json.dumps({"id": "evt_1", "type": type_, "api_version": "v1", "data": data, **extra}).encode()


def test_session_ended_gives_the_session_and_its_duration() -> None:
    event = parse_kallglot_event(
        _event("session.ended", {"id": "sess_1", "object": "session", "duration": 245.3})
    )
    assert (event.type, event.session_id, event.duration_seconds) == ("session.ended", "sess_1", 245.3)


def test_the_end_endpoint_spelling_duration_seconds_is_accepted() -> None:
    event = parse_kallglot_event(_event("session.ended", {"id": "sess_1", "duration_seconds": 12}))
    assert event.duration_seconds == 12.0


def test_transcript_ready_names_its_session() -> None:
    event = parse_kallglot_event(_event("transcript.ready", {"id": "trn_sess_1", "session_id": "sess_1"}))
    assert event.session_id == "sess_1"


@pytest.mark.parametrize(
    ("data", "full"),
    [
        ({"id": "anl_1", "session_id": "sess_1", "status": "completed", "summary": "ok"}, True),
        ({"id": "anl_1", "session_id": "sess_1", "status": "completed"}, False),
        ({"id": "ana_1", "session_id": "sess_1", "status": "complete", "results": {}}, True),
        ({"id": "anl_1", "session_id": "sess_1", "status": "failed", "error": "empty"}, True),
        ({"id": "anl_1", "session_id": "sess_1", "status": "failed"}, False),
        ({"id": "anl_1"}, False),
    ],
    ids=["new-full", "new-bare", "old-full", "failed-full", "failed-bare", "id-only"],
)
def test_analysis_events_say_whether_they_carry_the_result(data: dict[str, Any], full: bool) -> None:
    event = parse_kallglot_event(_event("analysis.complete", data))
    assert event.analysis_id == data["id"]
    assert (event.analysis is not None) == full


@pytest.mark.parametrize("type_", ["analysis.complete", "analysis.completed", "analysis.failed"])
def test_every_spelling_of_the_analysis_events_is_recognised(type_: str) -> None:
    result = {"error": {"code": "x"}} if type_ == "analysis.failed" else {"summary": "s"}
    event = parse_kallglot_event(_event(type_, {"id": "anl_1", "session_id": "sess_1"} | result))
    # Recognised: parsed as an analysis event, and its status (from the type) says the result is in it.
    assert (event.analysis_id, event.analysis is not None) == ("anl_1", True)


def test_unknown_types_parse_and_carry_their_data() -> None:
    event = parse_kallglot_event(_event("recording.ready", {"id": "rec_1"}))
    assert (event.type, event.session_id) == ("recording.ready", None)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b'"text"',
        json.dumps({"type": "session.ended", "data": {}}).encode(),
        json.dumps({"id": "", "type": "session.ended", "data": {}}).encode(),
        json.dumps({"id": "evt_1", "type": "", "data": {}}).encode(),
        json.dumps({"id": "evt_1", "type": "session.ended", "data": "x"}).encode(),
        _event("session.ended", {"id": "sess 1"}),
        _event("session.ended", {"id": "sess_1", "duration": True}),
        _event("analysis.complete", {"id": "anl_1", "session_id": 5}),
        _event("analysis.complete", {"id": "anl_1", "status": 3}),
        json.dumps({"id": "e" * 300, "type": "session.ended", "data": {}}).encode(),
        b'{"id": "evt_1", "type": "session.ended", "data": {"id": "sess_1", "duration": NaN}}',
        b'{"id": "evt_1", "type": "session.ended", "data": {"id": "sess_1", "duration": Infinity}}',
    ],
)
def test_invalid_events_are_refused(body: bytes) -> None:
    with pytest.raises(InvalidEvent):
        parse_kallglot_event(body)


def test_call_ended_keeps_the_call_fields_that_travel_to_handlers() -> None:
    body = {
        "session_id": "sess_1",
        "call_id": "CA1",
        "duration_seconds": 10,
        "direction": "inbound",
        "from": "+1415",
        "to": "+1416",
        "agent": {"id": "u_1", "email": "a@example.com"},
        "metadata": {"crm_contact_id": "123"},
        "end_session": True,
        "unknown": "dropped",
    }
    event = parse_call_ended(json.dumps(body).encode())
    assert event.end_session is True
    assert event.call_fields() == {
        "call_id": "CA1",
        "duration_seconds": 10.0,
        "direction": "inbound",
        "from": "+1415",
        "to": "+1416",
        "agent": {"id": "u_1", "email": "a@example.com"},
        "metadata": {"crm_contact_id": "123"},
    }


def test_call_ended_errors_name_the_field() -> None:
    with pytest.raises(InvalidEvent, match="duration_seconds"):
        parse_call_ended(b'{"session_id": "sess_1", "duration_seconds": "long"}')


def test_nul_characters_are_dropped_so_every_store_accepts_the_event() -> None:
    body = _event("session.ended", {"id": "sess_1", "note": "a\u0000b"})
    assert b"\\u0000" in body
    event = parse_kallglot_event(body)
    assert event.data["note"] == "ab"
    call = parse_call_ended(b'{"session_id": "sess_1", "metadata": {"k\\u0000": "v\\u0000"}}')
    assert call.metadata == {"k": "v"}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"id": "evt_1", "type": "x", "data": {"n": 1' + b"0" * 5000 + b"}}", "more than 64 digits"),
        (b'{"id": "evt_1", "type": "x", "data": {"n": 1e400}}', "out of range"),
        (b'{"id": "evt_1", "type": "x", "data": ' + b'{"a": ' * 600 + b'"\\u0000"' + b"}" * 601, "nested"),
    ],
    ids=["5000-digit-integer", "1e400", "600-deep-with-nul"],
)
def test_values_a_backend_refuses_are_refused_at_the_door(body: bytes, problem: str) -> None:
    with pytest.raises(InvalidEvent, match=problem):
        parse_kallglot_event(body)


def test_lone_surrogates_and_nuls_are_made_safe_in_strings_and_keys() -> None:
    body = (
        b'{"id": "evt_1", "type": "session.ended", "data": {"id": "sess_1", "n\\udc00": "a\\u0000\\udc00"}}'
    )
    event = parse_kallglot_event(body)
    assert event.data["n\ufffd"] == "a\ufffd"


@pytest.mark.parametrize(
    "ended_at",
    ["yesterday", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"],
    ids=["not-a-date", "past-year-9999-in-utc", "before-year-1-in-utc"],
)
def test_a_call_ended_at_that_is_not_a_usable_date_is_refused(ended_at: str) -> None:
    with pytest.raises(InvalidEvent, match="ended_at"):
        parse_call_ended(json.dumps({"session_id": "sess_1", "ended_at": ended_at}).encode())


@pytest.mark.parametrize(
    "duration", [1e308, -1, 7 * 86400 + 1, 10**60], ids=["1e308", "negative", "week+1", "10^60"]
)
def test_a_kallglot_duration_out_of_range_is_taken_as_unknown(duration: float) -> None:
    event = parse_kallglot_event(_event("session.ended", {"id": "sess_1", "duration": duration}))
    assert event.duration_seconds is None
