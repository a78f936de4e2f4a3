"""The async side of the Kallglot rate budget: callers queue by priority and go when it says so.

``receiver.pacing.Budget`` decides *when* the next request may go; this queue decides *who*:
starts first (each frees a queued call and its credit is what we are here for), then everything
else (polls, look-ups, ``end``) in arrival order, except that every ``fair_every``-th slot goes to
the oldest other request when one waits, so a long backlog of starts never starves polling.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from enum import IntEnum

from receiver.pacing import Budget


class Priority(IntEnum):
    START = 0
    OTHER = 1


class Throttle:
    """One queue in front of one ``Budget``; the clock is the budget's, timers are the loop's."""

    def __init__(self, budget: Budget, clock: Callable[[], float], *, fair_every: int = 5) -> None:
        self.budget = budget
        self._clock = clock
        self._fair_every = fair_every
        self._queues: dict[Priority, deque[asyncio.Future[int]]] = {p: deque() for p in Priority}
        self._timer: asyncio.TimerHandle | None = None
        self._starts_in_a_row = 0

    def waiting(self, priority: Priority) -> int:
        return sum(1 for future in self._queues[priority] if not future.done())

    async def acquire(self, priority: Priority) -> int:
        """Wait for a slot; return the budget's ticket for ``observe``."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queues[priority].append(future)
        self._pump()
        try:
            return await future
        except asyncio.CancelledError:
            self._pump()  # the slot (if it was ours) goes to the next caller at the next pump
            raise

    def answered(self) -> None:
        """An answer arrived (after ``budget.observe``/``refused``): the schedule may have changed."""
        self._pump()

    def _next(self) -> deque[asyncio.Future[int]] | None:
        for queue in self._queues.values():
            while queue and queue[0].done():
                queue.popleft()
        starts, others = self._queues[Priority.START], self._queues[Priority.OTHER]
        if others and (not starts or self._starts_in_a_row >= self._fair_every - 1):
            return others
        return starts or None

    def _pump(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while (queue := self._next()) is not None:
            now = self._clock()
            at = self.budget.next_at(now)
            if at is None:
                return  # a probe is in flight: its answer pumps again
            if at > now:
                self._timer = asyncio.get_running_loop().call_later(at - now, self._pump)
                return
            future = queue.popleft()
            is_start = queue is self._queues[Priority.START]
            self._starts_in_a_row = self._starts_in_a_row + 1 if is_start else 0
            future.set_result(self.budget.take(now))
