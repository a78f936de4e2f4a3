"""The start gate as a table on a virtual clock: pause, probe, back-off to its cap, resume."""

from __future__ import annotations

import pytest

from receiver.gate import StartGate
from receiver.metrics import Metrics
from tests.sandbox.support import FakeClock

# (at, action, argument, what open_for(at) says after it, paused_until after it)
Step = tuple[float, str, object, int, float]

CREDITS: list[Step] = [
    (0.0, "look", None, -1, 0.0),  # never paused: no limit from the gate
    (0.0, "pause", "HTTP 402", 0, 15.0),
    (14.9, "look", None, 0, 15.0),
    (15.0, "look", None, 1, 15.0),  # one probe
    (15.0, "pause", "HTTP 402", 0, 45.0),  # refused again: 30 s
    (45.0, "pause", "HTTP 402", 0, 75.0),  # 60 s would be past the 30 s cap
    (50.0, "credits", 0.0, 0, 75.0),  # a balance at the reserve does not reopen it
    (50.0, "credits", None, 0, 75.0),  # nor does an answer without a balance
    (50.0, "credits", 1.0, -1, 0.0),  # above the reserve: open at once
    (50.0, "pause", "HTTP 402", 0, 65.0),  # the back-off starts again from 15 s
]

NOT_CREDITS: list[Step] = [
    (0.0, "pause", "HTTP 403 organization_inactive", 0, 15.0),
    (1.0, "credits", 100.0, 0, 15.0),  # a balance does not fix an inactive organization
    (1.0, "resume", None, -1, 0.0),  # the operators' resume does
]


@pytest.mark.parametrize("steps", [CREDITS, NOT_CREDITS], ids=["credits", "not-credits"])
def test_gate(steps: list[Step]) -> None:
    clock = FakeClock(0.0)
    metrics = Metrics()
    gate = StartGate(clock, metrics, min_pause=15.0, max_pause=30.0)
    for index, (at, action, argument, open_for, paused_until) in enumerate(steps):
        clock.now = at
        if action == "pause":
            assert isinstance(argument, str)
            gate.pause(argument, at, for_credits=argument == "HTTP 402")
        elif action == "credits":
            assert argument is None or isinstance(argument, float)
            gate.observe_credits(argument, 0.0)
        elif action == "resume":
            gate.resume()
        assert (index, gate.open_for(at), gate.paused_until) == (index, open_for, paused_until)
        paused = metrics.registry.get_sample_value("receiver_credits_paused")
        assert (index, paused) == (index, 0 if open_for < 0 else 1)
