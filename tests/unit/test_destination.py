"""A destination's claim allowance and pacing as tables: concurrency left, rate-limit slots, circuit."""

from __future__ import annotations

from typing import Any

import pytest

from receiver.delivery import Delivery, HandlerOptions
from receiver.destination import Destination
from receiver.fanout import Subscription


class Nowhere:
    """A handler that is never asked (allowance and pacing never deliver)."""

    name = "h"

    async def deliver(self, delivery: Delivery) -> None:
        raise AssertionError("not asked")

    async def probe(self) -> None: ...

    async def aclose(self) -> None: ...


def _destination(**options: Any) -> Destination:
    subscription = Subscription(HandlerOptions(name="h", type="file", **options))
    return Destination.build(subscription, Nowhere())


@pytest.mark.parametrize(
    ("options", "in_flight", "next_slot", "now", "allowed"),
    [
        ({"concurrency": 4}, 0, 0.0, 10.0, 4),
        ({"concurrency": 4}, 3, 0.0, 10.0, 1),
        ({"concurrency": 4}, 4, 0.0, 10.0, 0),
        ({"concurrency": 8, "rate_limit_per_second": 2.0}, 0, 0.0, 10.0, 2),  # one second's worth
        ({"concurrency": 8, "rate_limit_per_second": 0.5}, 0, 0.0, 10.0, 1),  # at least one
        ({"concurrency": 8, "rate_limit_per_second": 2.0}, 0, 10.5, 10.0, 0),  # its slot is later
        ({"concurrency": 1, "rate_limit_per_second": 5.0}, 0, 10.0, 10.0, 1),  # the slot is now
    ],
    ids=["free", "three-in-flight", "full", "rate-2", "rate-half", "slot-later", "slot-now"],
)
def test_allowance(
    options: dict[str, Any], in_flight: int, next_slot: float, now: float, allowed: int
) -> None:
    destination = _destination(**options)
    destination.in_flight, destination.next_slot = in_flight, next_slot
    assert destination.allowance(now) == allowed


def test_an_open_circuit_allows_one_probe_once_its_time_is_up() -> None:
    destination = _destination(concurrency=4, circuit={"failure_threshold": 1, "open_seconds": 10})
    destination.circuit.record(False, 0.0, lambda handler, opened: None)
    assert [destination.allowance(at) for at in (5.0, 10.0, 10.0)] == [0, 1, 0]
    destination.circuit.no_probe()  # the probe never reached the handler (filtered, or nothing due)
    assert destination.allowance(10.0) == 1


@pytest.mark.parametrize(
    ("rate", "count", "delays", "next_slot"),
    [
        (None, 3, [0.0, 0.0, 0.0], 0.0),
        (2.0, 3, [0.0, 0.5, 1.0], 101.5),
        (4.0, 1, [0.0], 100.25),
        (4.0, 0, [], 0.0),  # nothing claimed: the slot is not moved
    ],
    ids=["no-limit", "three-at-2-per-s", "one-at-4-per-s", "none"],
)
def test_pace_spreads_a_batch_over_the_rate_limit(
    rate: float | None, count: int, delays: list[float], next_slot: float
) -> None:
    destination = _destination(rate_limit_per_second=rate)
    assert destination.pace(100.0, count) == delays
    assert destination.next_slot == next_slot
