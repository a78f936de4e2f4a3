"""The delivery circuit breaker as a table: each row is one event at one virtual instant."""

from __future__ import annotations

import pytest

from receiver.delivery import CircuitPolicy
from receiver.destination import Circuit

# An event is ("ask", free) -> what allowance() grants, or ("ok"|"fail", None) -> record().
Step = tuple[float, str, int | None, int | None, bool]  # at, event, free, granted, open after

OPENS_AFTER_THREE: list[Step] = [
    (0.0, "ask", 4, 4, False),  # closed: everything free may go
    (0.0, "fail", None, None, False),
    (0.1, "fail", None, None, False),
    (0.2, "fail", None, None, True),  # the third failure in a row opens it for 10 s
    (0.3, "ask", 4, 0, True),
    (10.1, "ask", 4, 0, True),  # still open: 0.2 + 10 s
    (10.2, "ask", 4, 1, True),  # one probe
    (10.2, "ask", 4, 0, True),  # ... and only one while it is out
    (10.3, "ok", None, None, False),  # the probe succeeded: closed, the count starts again
    (10.3, "ask", 4, 4, False),
    (10.4, "fail", None, None, False),  # one failure is not three
]

PROBE_FAILS: list[Step] = [
    (0.0, "fail", None, None, False),
    (0.0, "fail", None, None, False),
    (0.0, "fail", None, None, True),
    (10.0, "ask", 3, 1, True),
    (10.5, "fail", None, None, True),  # the probe failed: open for another 10 s from now
    (20.4, "ask", 3, 0, True),
    (20.5, "ask", 3, 1, True),
    (21.0, "ok", None, None, False),
]

SUCCESS_RESETS_THE_COUNT: list[Step] = [
    (0.0, "fail", None, None, False),
    (0.0, "fail", None, None, False),
    (0.0, "ok", None, None, False),
    (0.0, "fail", None, None, False),
    (0.0, "fail", None, None, False),  # two in a row again: still closed
    (0.0, "ask", 2, 2, False),
]


@pytest.mark.parametrize(
    "steps",
    [OPENS_AFTER_THREE, PROBE_FAILS, SUCCESS_RESETS_THE_COUNT],
    ids=["opens-after-three", "probe-fails", "success-resets"],
)
def test_circuit(steps: list[Step]) -> None:
    circuit = Circuit("sink", CircuitPolicy(failure_threshold=3, open_seconds=10.0))
    changes: list[tuple[str, bool]] = []
    for index, (at, event, free, granted, is_open) in enumerate(steps):
        if event == "ask":
            assert free is not None
            assert (index, circuit.allowance(at, free)) == (index, granted)
        else:
            circuit.record(event == "ok", at, lambda handler, opened: changes.append((handler, opened)))
        assert (index, circuit.open_until is not None) == (index, is_open)
    # on_change fires on each edge, never twice for one
    edges = [is_open for _, _, _, _, is_open in steps]
    expected = [("sink", now) for before, now in zip([False, *edges], edges, strict=False) if before != now]
    assert changes == expected
