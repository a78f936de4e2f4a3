"""Kallglot's answers read once: status normalisation, session fields, and the end-session key."""

from __future__ import annotations

from typing import Any

import pytest

from receiver import kallglot_answers
from receiver.lifecycle import CallState
from receiver.store.keys import analysis_key, end_session_key


@pytest.mark.parametrize(
    ("raw", "status", "state"),
    [
        ("completed", "completed", CallState.COMPLETED),
        ("complete", "completed", CallState.COMPLETED),  # OLD docs
        ("failed", "failed", CallState.FAILED),
        ("processing", "processing", None),
        ("queued", "processing", None),
        (None, "processing", None),
        (7, "processing", None),
    ],
)
def test_the_analysis_status_is_normalised_in_one_place(
    raw: object, status: str, state: CallState | None
) -> None:
    analysis = kallglot_answers.analysis({"id": "anl_1", "status": raw})
    assert (analysis.status, analysis.state) == (status, state)


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ({"status": "failed", "error": "boom"}, "boom"),
        ({"status": "failed", "error": "x" * 600}, "x" * 500),
        ({"status": "completed", "error": "ignored"}, None),
        ({"status": "failed"}, None),
    ],
)
def test_a_failed_analysis_carries_its_bounded_error(document: dict[str, Any], error: str | None) -> None:
    assert kallglot_answers.analysis(document).error == error


@pytest.mark.parametrize(
    ("document", "duration", "phone", "metadata", "call_ids"),
    [
        ({"duration_seconds": 12.5}, 12.5, None, None, ()),
        ({"duration": 30}, 30.0, None, None, ()),  # OLD shape
        ({"duration": True, "phone_number": ""}, None, None, None, ()),
        (
            {
                "phone_number": "+1",
                "metadata": {"a": 1},
                "provider": {"call_sid": "CA1"},
                "call_control_id": "v3",
            },
            None,
            "+1",
            {"a": 1},
            ("CA1", "v3"),
        ),
        ({"metadata": [1], "provider": {"call_sid": "x" * 201}}, None, None, None, ()),
    ],
)
def test_a_session_is_read_from_either_shape(
    document: dict[str, Any],
    duration: float | None,
    phone: str | None,
    metadata: dict[str, Any] | None,
    call_ids: tuple[str, ...],
) -> None:
    session = kallglot_answers.session(document, request_id="req_1")
    assert (session.duration_seconds, session.phone_number, session.metadata) == (duration, phone, metadata)
    assert session.carrier_call_ids == call_ids
    assert session.request_id == "req_1"
    assert session.document is document


def test_the_end_session_key_keeps_the_value_of_in_flight_calls() -> None:
    key = analysis_key("sess_1", "standard", ["summary", "sentiment"])
    # The value sent before the key had its own function: "kr-end-" + analysis_key[12:].
    assert end_session_key(key) == f"kr-end-{key[12:]}"
    assert end_session_key(key) != end_session_key(analysis_key("sess_2", "standard", ["summary"]))
