"""The queue in front of the rate budget: starts go first, polls are never starved."""

from __future__ import annotations

import asyncio
import time

from receiver.pacing import Budget, RateLimit
from receiver.throttle import Priority, Throttle


def _paced_budget(spacing: float) -> Budget:
    """A budget that has learned a limit of 20 per ``20 * spacing`` seconds."""
    budget, now = Budget(margin=0.0), time.time()
    ticket = budget.take(now)
    budget.observe(RateLimit(limit=20, remaining=19, reset_at=now + 20 * spacing), ticket, now, now)
    return budget


async def test_starts_go_before_waiting_polls_and_every_fifth_slot_is_a_poll() -> None:
    throttle = Throttle(_paced_budget(0.02), time.time, fair_every=5)
    order: list[str] = []

    async def one(priority: Priority, name: str) -> None:
        await throttle.acquire(priority)
        order.append(name)

    tasks = [asyncio.create_task(one(Priority.OTHER, f"poll{i}")) for i in range(3)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(one(Priority.START, f"start{i}")) for i in range(8)]
    async with asyncio.timeout(10):
        await asyncio.gather(*tasks)

    # poll0 went at once (nothing else waited); then starts, with the oldest poll every fifth slot
    assert order == [
        "poll0",
        *(f"start{i}" for i in range(4)),
        "poll1",
        *(f"start{i}" for i in range(4, 8)),
        "poll2",
    ]


async def test_a_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    throttle = Throttle(_paced_budget(0.05), time.time)
    await throttle.acquire(Priority.START)
    waiting = asyncio.create_task(throttle.acquire(Priority.START))
    behind = asyncio.create_task(throttle.acquire(Priority.START))
    await asyncio.sleep(0)
    waiting.cancel()

    async with asyncio.timeout(5):
        ticket = await behind
    assert ticket > 0
    assert throttle.waiting(Priority.START) == 0
