"""The webhook dispatcher on its own: a timer heap that scales and bounded concurrent attempts."""

from __future__ import annotations

import asyncio
import random
import time

from receiver.sandbox.webhooks import Delivery, WebhookDispatcher

from .support import FakeClock, WebhookSink, wait_for


def dispatcher(clock: FakeClock | None = None, *, max_concurrency: int = 64) -> WebhookDispatcher:
    rng = random.Random(0)
    return WebhookDispatcher(
        clock=clock or time.time,
        rng=lambda: rng,
        retry_scale=lambda: 1.0,
        timeout=lambda: 5.0,
        max_concurrency=max_concurrency,
    )


def delivery(url: str, n: int) -> Delivery:
    return Delivery(f"wh_del_{n}", url, "secret", b'{"id":"evt_%d"}' % n, 0)


async def test_thousands_of_pending_webhooks_cost_no_tasks() -> None:
    clock = FakeClock()
    d = dispatcher(clock)
    await d.start()
    try:
        tasks_before = len(asyncio.all_tasks())
        for n in range(5000):
            d.deliver(delivery("http://127.0.0.1:9/hook", n), at=clock.now + 3600 + n)
        await asyncio.sleep(0)
        assert d.pending == 5000
        assert len(asyncio.all_tasks()) == tasks_before
    finally:
        await d.aclose()
    assert d.pending == 0


async def test_attempts_run_concurrently_but_never_beyond_the_bound(sink: tuple[WebhookSink, str]) -> None:
    hooks, url = sink
    hooks.delays = [0.02] * 40
    d = dispatcher(max_concurrency=4)
    await d.start()
    try:
        for n in range(40):
            d.deliver(delivery(url, n))
        await wait_for(lambda: d.delivered == 40, what="all delivered")
    finally:
        await d.aclose()
    assert 1 < hooks.most_in_flight <= 4
    assert (d.sent, d.failed_attempts, d.pending) == (40, 0, 0)


async def test_timers_fire_in_due_order_once_the_clock_gets_there() -> None:
    clock = FakeClock()
    d = dispatcher(clock)
    fired: list[str] = []
    await d.start()
    try:
        d.call_at(clock.now + 2, lambda: fired.append("second"))
        d.call_at(clock.now + 1, lambda: fired.append("first"))
        d.call_at(clock.now + 9, lambda: fired.append("later"))
        clock.advance(2)
        d.wake()
        await wait_for(lambda: len(fired) == 2, what="two timers")
    finally:
        await d.aclose()
    assert fired == ["first", "second"]


async def test_start_and_aclose_are_idempotent() -> None:
    d = dispatcher()
    await d.aclose()
    await d.start()
    await d.start()
    await d.aclose()
    await d.aclose()
