"""Call states only move forward; every reordered or late event is a no-op."""

from __future__ import annotations

import pytest

from receiver.lifecycle import (
    ACTIVE,
    FINISHED,
    REOPENINGS,
    CallState,
    DeliveryState,
    allowed_sources,
    analysis_status,
    can_transition,
    can_transition_delivery,
    is_forward,
    sql_in,
    sql_value,
)

S = CallState

ALLOWED = [
    (S.RECEIVED, S.STARTING),
    (S.RECEIVED, S.SKIPPED),
    (S.STARTING, S.PROCESSING),
    (S.STARTING, S.SKIPPED),
    (S.STARTING, S.COMPLETED),  # the webhook beat the POST's answer
    (S.PROCESSING, S.DELIVERED),  # finished, and no handler subscribes
    (S.RECEIVED, S.DELIVERED),  # the webhook came first, and no handler subscribes
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
    (S.SKIPPED, S.STARTING),
    (S.STALE, S.PROCESSING),
    (S.STARTING, S.RECEIVED),
    (S.SKIPPED, S.PROCESSING),
    (S.DELIVERED, S.STALE),
]
REOPENED = [
    (S.SKIPPED, S.RECEIVED),  # a carrier's provisional skip, restarted by a leg that connected
    (S.DELIVERED, S.COMPLETED),  # an operator replays a delivered call
    (S.DELIVERED, S.FAILED),
]


@pytest.mark.parametrize(("current", "target"), ALLOWED, ids=[f"{a}->{b}" for a, b in ALLOWED])
def test_forward_moves_are_allowed(current: CallState, target: CallState) -> None:
    assert can_transition(current, target)


@pytest.mark.parametrize(("current", "target"), REFUSED, ids=[f"{a}->{b}" for a, b in REFUSED])
def test_backward_moves_are_refused(current: CallState, target: CallState) -> None:
    assert not can_transition(current, target)


@pytest.mark.parametrize(("current", "target"), REOPENED, ids=[f"{a}->{b}" for a, b in REOPENED])
def test_the_deliberate_reopenings_are_allowed_but_not_forward(current: CallState, target: CallState) -> None:
    assert can_transition(current, target)
    assert not is_forward(current, target)


def test_only_the_reopenings_leave_a_terminal_state() -> None:
    for state in CallState:
        for terminal in (S.DELIVERED, S.SKIPPED):
            assert can_transition(terminal, state) == (state in REOPENINGS[terminal])


def test_forward_moves_never_go_back_in_the_order_of_the_diagram() -> None:
    order = [S.RECEIVED, S.STARTING, S.SKIPPED, S.PROCESSING, S.STALE, S.COMPLETED, S.FAILED, S.DELIVERED]
    for current in CallState:
        for target in CallState:
            if is_forward(current, target):
                assert order.index(target) > order.index(current), f"{current} -> {target}"


def test_states_are_spelled_for_sql_from_the_enum() -> None:
    assert sql_value(S.STALE) == "'stale'"
    assert sql_in(S.RECEIVED, S.STARTING) == "('received', 'starting')"


def test_a_finished_call_can_only_move_forward_to_delivered() -> None:
    for finished in FINISHED:
        assert {t for t in CallState if is_forward(finished, t)} <= {S.DELIVERED}


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


def test_no_store_module_spells_a_state_by_hand() -> None:
    """The SQL of both stores takes its states from this module (``sql_value``/``sql_in``)."""
    import re
    from pathlib import Path

    import receiver.store

    names = {s.value for s in CallState} | {s.value for s in DeliveryState}
    literal = re.compile("'(" + "|".join(sorted(names)) + ")'")
    folder = Path(receiver.store.__file__).parent
    found = {p.name: literal.findall(p.read_text()) for p in sorted(folder.glob("*.py"))}
    assert {name: hits for name, hits in found.items() if hits} == {}


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        (DeliveryState.PENDING, DeliveryState.DELIVERED, True),
        (DeliveryState.PENDING, DeliveryState.DEAD, True),
        (DeliveryState.PENDING, DeliveryState.ORPHANED, True),
        (DeliveryState.DEAD, DeliveryState.PENDING, True),
        (DeliveryState.DELIVERED, DeliveryState.PENDING, True),
        (DeliveryState.DEAD, DeliveryState.DELIVERED, False),
        (DeliveryState.ORPHANED, DeliveryState.DEAD, False),
        (DeliveryState.DELIVERED, DeliveryState.DEAD, False),
        (DeliveryState.PENDING, DeliveryState.FILTERED, True),  # its when did not match
        (DeliveryState.FILTERED, DeliveryState.PENDING, True),  # replay
        (DeliveryState.FILTERED, DeliveryState.DELIVERED, False),
        (DeliveryState.DEAD, DeliveryState.FILTERED, False),
    ],
)
def test_delivery_moves(current: DeliveryState, target: DeliveryState, allowed: bool) -> None:
    assert can_transition_delivery(current, target) is allowed


def test_active_states_are_every_state_but_the_terminal_ones_in_order() -> None:
    """``receiver_calls{state}`` exports these; dashboards name them."""
    assert tuple(s.value for s in ACTIVE) == (
        "received",
        "starting",
        "processing",
        "stale",
        "completed",
        "failed",
    )
