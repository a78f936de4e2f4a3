"""The start gate as a table on a virtual clock: pause, probe, back-off to its cap, resume."""

from __future__ import annotations

import pytest

from receiver.gate import Allowance, StartGate
from receiver.metrics import Metrics
from tests.sandbox.support import FakeClock

# (at, action, argument, what allowance(at) says after it, paused_until after it)
Step = tuple[float, str, object, Allowance, float]
OPEN, SHUT, PROBE = Allowance.OPEN, Allowance.SHUT, Allowance.PROBE

CREDITS: list[Step] = [
    (0.0, "look", None, OPEN, 0.0),  # never paused: no limit from the gate
    (0.0, "pause", "HTTP 402", SHUT, 15.0),
    (14.9, "look", None, SHUT, 15.0),
    (15.0, "look", None, PROBE, 15.0),  # one probe
    (15.0, "pause", "HTTP 402", SHUT, 45.0),  # refused again: 30 s
    (45.0, "pause", "HTTP 402", SHUT, 75.0),  # 60 s would be past the 30 s cap
    (50.0, "credits", 0.0, SHUT, 75.0),  # a balance at the reserve does not reopen it
    (50.0, "credits", None, SHUT, 75.0),  # nor does an answer without a balance
    (50.0, "credits", 1.0, OPEN, 0.0),  # above the reserve: open at once
    (50.0, "pause", "HTTP 402", SHUT, 65.0),  # the back-off starts again from 15 s
]

NOT_CREDITS: list[Step] = [
    (0.0, "pause", "HTTP 403 organization_inactive", SHUT, 15.0),
    (1.0, "credits", 100.0, SHUT, 15.0),  # a balance does not fix an inactive organization
    (1.0, "resume", None, OPEN, 0.0),  # the operators' resume does
]


@pytest.mark.parametrize("steps", [CREDITS, NOT_CREDITS], ids=["credits", "not-credits"])
def test_gate(steps: list[Step]) -> None:
    clock = FakeClock(0.0)
    metrics = Metrics()
    gate = StartGate(clock, metrics, min_pause=15.0, max_pause=30.0)
    for index, (at, action, argument, allowance, paused_until) in enumerate(steps):
        clock.now = at
        if action == "pause":
            assert isinstance(argument, str)
            gate.pause(argument, at, for_credits=argument == "HTTP 402")
        elif action == "credits":
            assert argument is None or isinstance(argument, float)
            gate.observe_credits(argument, 0.0)
        elif action == "resume":
            gate.resume()
        assert (index, gate.allowance(at), gate.paused_until) == (index, allowance, paused_until)
        paused = metrics.registry.get_sample_value("receiver_credits_paused")
        assert (index, paused) == (index, 0 if allowance is OPEN else 1)
