"""The contract suite's transition check can fail: it refuses moves the lifecycle table forbids."""

from __future__ import annotations

import pytest

from receiver.lifecycle import CallState, DeliveryState
from tests.store.transitions import check

C, D = CallState, DeliveryState


def test_allowed_moves_are_counted() -> None:
    before = ({"s": C.PROCESSING}, {"d": D.PENDING})
    after = ({"s": C.COMPLETED, "new": C.RECEIVED}, {"d": D.DELIVERED, "e": D.PENDING})
    assert check("finish", before, after) == 2


@pytest.mark.parametrize(
    ("before", "after", "message"),
    [
        (({"s": C.PROCESSING}, {}), ({"s": C.STARTING}, {}), "moved call s processing -> starting"),
        (({}, {}), ({"s": C.PROCESSING}, {}), "created call s in processing"),
        (({}, {"d": D.ORPHANED}), ({}, {"d": D.DELIVERED}), "moved delivery d orphaned -> delivered"),
        (({}, {}), ({}, {"d": D.DEAD}), "created delivery d in dead"),
    ],
    ids=["backward", "born-in-flight", "orphan-delivered", "born-dead"],
)
def test_forbidden_moves_fail(before: object, after: object, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check("op", before, after)  # type: ignore[arg-type]
