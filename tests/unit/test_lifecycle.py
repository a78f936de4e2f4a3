"""Call states only move forward; every reordered or late event is a no-op."""

from __future__ import annotations

import pytest

from receiver.lifecycle import FINISHED, CallState, allowed_sources, analysis_status, can_transition

S = CallState

ALLOWED = [
    (S.RECEIVED, S.STARTING),
    (S.RECEIVED, S.SKIPPED),
    (S.STARTING, S.PROCESSING),
    (S.STARTING, S.SKIPPED),
    (S.STARTING, S.COMPLETED),  # the webhook beat the POST's answer
    (S.PROCESSING, S.COMPLETED),
    (S.PROCESSING, S.FAILED),
    (S.PROCESSING, S.STALE),
    (S.STALE, S.COMPLETED),
    (S.COMPLETED, S.DELIVERED),
    (S.FAILED, S.DELIVERED),
]
REFUSED = [
    (S.PROCESSING, S.STARTING),
    (S.PROCESSING, S.RECEIVED),
    (S.COMPLETED, S.PROCESSING),
    (S.COMPLETED, S.FAILED),
    (S.FAILED, S.COMPLETED),
    (S.DELIVERED, S.COMPLETED),
    (S.SKIPPED, S.STARTING),
    (S.STALE, S.PROCESSING),
]


@pytest.mark.parametrize(("current", "target"), ALLOWED, ids=[f"{a}->{b}" for a, b in ALLOWED])
def test_forward_moves_are_allowed(current: CallState, target: CallState) -> None:
    assert can_transition(current, target)


@pytest.mark.parametrize(("current", "target"), REFUSED, ids=[f"{a}->{b}" for a, b in REFUSED])
def test_backward_moves_are_refused(current: CallState, target: CallState) -> None:
    assert not can_transition(current, target)


def test_nothing_leaves_a_terminal_state() -> None:
    for state in CallState:
        assert not can_transition(S.DELIVERED, state)
        assert not can_transition(S.SKIPPED, state)


def test_a_finished_call_can_only_be_delivered() -> None:
    for finished in FINISHED:
        assert {t for t in CallState if can_transition(finished, t)} <= {S.DELIVERED}


def test_allowed_sources_is_the_inverse_of_the_table() -> None:
    for target in CallState:
        for source in CallState:
            assert (source in allowed_sources(target)) == can_transition(source, target)


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("completed", S.COMPLETED),
        ("complete", S.COMPLETED),
        ("failed", S.FAILED),
        ("processing", None),
        ("queued", None),
        (None, None),
        ("weird", None),
    ],
)
def test_both_documented_status_vocabularies(raw: str | None, state: CallState | None) -> None:
    assert analysis_status(raw) == state
