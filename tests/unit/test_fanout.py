"""``when`` (JMESPath) and ``fields`` decide who gets what."""

from __future__ import annotations

from typing import Any

import pytest

from receiver.delivery import HandlerOptions
from receiver.fanout import Subscription, document, narrow, subscribers
from receiver.lifecycle import CallState

ANALYSIS = {
    "status": "completed",
    "summary": "s",
    "compliance": {"status": "review", "flags": ["x"]},
    "performance": {"score": 0.4},
}


def _options(**kw: Any) -> HandlerOptions:
    return HandlerOptions(name=kw.pop("name", "h"), type="file", **kw)


@pytest.mark.parametrize(
    ("when", "call", "wanted"),
    [
        (None, {}, True),
        ("analysis.compliance.status != 'ok'", {}, True),
        ("analysis.compliance.status == 'ok'", {}, False),
        ("analysis.performance.score < `0.5`", {}, True),
        ("call.direction == 'inbound'", {"direction": "inbound"}, True),
        ("call.direction == 'inbound'", {}, False),
        ("length(analysis.compliance.flags) > `0`", {}, True),
        ("analysis.performance.score < 'text'", {}, False),  # a type error is "no match", never a crash
    ],
)
def test_when_filters(when: str | None, call: dict[str, Any], wanted: bool) -> None:
    doc = document("dlv_1", "sess_1", "completed", call, ANALYSIS)
    assert Subscription(_options(when=when)).matches(doc) is wanted


def test_events_select_completed_or_failed() -> None:
    subscriptions = [
        Subscription(_options(name="ok")),
        Subscription(_options(name="all", events=("completed", "failed"))),
    ]
    assert subscribers(subscriptions, CallState.COMPLETED) == ["ok", "all"]
    assert subscribers(subscriptions, CallState.FAILED) == ["all"]


def test_the_document_carries_the_stored_delivery_id() -> None:
    doc = document("dlv_stored", "sess_1", "failed", {"to": "+1"}, {"status": "failed"})
    assert doc == {
        "type": "call.analysis.failed",
        "id": "dlv_stored",
        "session_id": "sess_1",
        "call": {"to": "+1"},
        "analysis": {"status": "failed"},
    }


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (None, {"type": "t", "id": "i", "session_id": "s", "call": {"to": "+1"}, "analysis": ANALYSIS}),
        (["analysis.summary"], {"type": "t", "id": "i", "session_id": "s", "analysis": {"summary": "s"}}),
        (
            ["analysis.summary", "analysis.performance.score"],
            {
                "type": "t",
                "id": "i",
                "session_id": "s",
                "analysis": {"summary": "s", "performance": {"score": 0.4}},
            },
        ),
        (["call", "analysis.missing"], {"type": "t", "id": "i", "session_id": "s", "call": {"to": "+1"}}),
    ],
)
def test_fields_narrow_the_document(fields: list[str] | None, expected: dict[str, Any]) -> None:
    doc = {"type": "t", "id": "i", "session_id": "s", "call": {"to": "+1"}, "analysis": ANALYSIS}
    assert narrow(doc, fields) == expected


def test_a_when_that_raises_is_no_match_and_a_logged_reason(caplog: pytest.LogCaptureFixture) -> None:
    # ceil(inf) raises OverflowError inside JMESPath; Subscription.matches must not let it out.
    subscription = Subscription(_options(name="overflow", when="ceil(analysis.score) > `1`"))
    doc = {"type": "call.analysis.completed", "analysis": {"score": float("inf")}}
    with caplog.at_level("WARNING", logger="receiver.fanout"):
        assert subscription.matches(doc) is False
    record = next(r for r in caplog.records if r.getMessage() == "routing.when_failed")
    assert record.handler == "overflow"
    assert "OverflowError" in record.reason
