"""Backoff, Retry-After, X-RateLimit-* and the pacer, on a clock driven by hand."""

from __future__ import annotations

import heapq
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.pacing import Budget, RateLimit, backoff, parse_rate_limit, parse_retry_after
from receiver.sandbox.ratelimit import FixedWindow, Quota

NOW = 1_711_454_400.0


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    initial=st.floats(min_value=0.01, max_value=60),
    maximum=st.floats(min_value=0.01, max_value=3600),
    rand=st.floats(min_value=0, max_value=1),
)
def test_backoff_stays_between_half_and_the_capped_delay(
    attempt: int, initial: float, maximum: float, rand: float
) -> None:
    delay = backoff(attempt, initial=initial, maximum=maximum, rand=lambda: rand)
    capped = min(maximum, initial * 2 ** (attempt - 1)) if attempt < 1000 else maximum
    assert capped / 2 - 1e-9 <= delay <= capped + 1e-9


@pytest.mark.parametrize(
    ("attempt", "expected"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (50, 10.0)]
)
def test_backoff_grows_then_caps(attempt: int, expected: float) -> None:
    assert backoff(attempt, initial=1, maximum=10, rand=lambda: 1.0) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("30", 30.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("nan", None),
        ("soon", None),
        ("Tue, 26 Mar 2024 12:00:30 GMT", 30.0),
        ("99999999", 86400.0),
    ],
)
def test_retry_after(value: str | None, expected: float | None) -> None:
    now = 1711454400.0  # 2024-03-26T12:00:00Z
    assert parse_retry_after(value, now) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        (
            {"x-ratelimit-limit": "120", "x-ratelimit-remaining": "118", "x-ratelimit-reset": "1711454460"},
            RateLimit(120, 118, 1711454460.0),
        ),
        ({"x-ratelimit-remaining": "5", "x-ratelimit-reset": "30"}, RateLimit(None, 5, NOW + 30)),
        ({"x-ratelimit-remaining": "lots"}, None),
        ({"x-ratelimit-remaining": "-3", "x-ratelimit-limit": "10"}, RateLimit(10, None, None)),
    ],
)
def test_rate_limit_headers(headers: dict[str, str], expected: RateLimit | None) -> None:
    assert parse_rate_limit(headers, NOW) == expected


def _simulate(
    limit: int,
    window: float,
    duration: float,
    *,
    share: float = 1.0,
    seed: int = 1,
    others: float = 0.0,
    jitter: float = 0.01,
    replicas: int = 1,
) -> tuple[float, int, int]:
    """A backlog through ``Budget`` against the sandbox's fixed window, on a virtual clock.

    ``replicas`` budgets of ``share`` each spend from the one window, each with 16 requests in
    flight at most; each way takes 10 ms plus up to ``jitter``. ``others`` is the rate (per second)
    at which another client spends from the same window. Returns (share of the allowed rate used by
    the replicas together, 2xx, 429).
    """
    rng = random.Random(seed)
    budgets, server = [Budget(share=share) for _ in range(replicas)], FixedWindow()
    now, end = NOW + 0.3, NOW + 0.3 + duration
    pending: list[tuple[float, int, int, float, Quota]] = []  # (answered at, replica, ticket, sent at, quota)
    in_flight = [0] * replicas
    ok = refused = 0
    next_other = now if others else math.inf
    while now < end:
        while next_other <= now:
            server.take(next_other, limit, window)
            next_other += 1 / others
        while pending and pending[0][0] <= now:
            at, replica, ticket, sent_at, quota = heapq.heappop(pending)
            in_flight[replica] -= 1
            headers = {k.lower(): v for k, v in quota.headers().items()}
            budgets[replica].observe(parse_rate_limit(headers, at), ticket, sent_at, at)
            if not quota.allowed:
                budgets[replica].refused(max(1.0, math.ceil(quota.retry_after)), at)
        dues = [b.next_at(now) if in_flight[i] < 16 else None for i, b in enumerate(budgets)]
        ready = [i for i, due in enumerate(dues) if due is not None and due <= now]
        if not ready:
            candidates = [t for t in (*dues, pending[0][0] if pending else None, next_other) if t is not None]
            now = min(candidates)
            continue
        for replica in ready:
            ticket = budgets[replica].take(now)
            in_flight[replica] += 1
            arrival = now + 0.01 + rng.random() * jitter
            quota = server.take(arrival, limit, window)
            ok, refused = (ok + 1, refused) if quota.allowed else (ok, refused + 1)
            heapq.heappush(pending, (arrival + 0.01 + rng.random() * jitter, replica, ticket, now, quota))
    return ok / (duration * limit * share * replicas / window), ok, refused


@pytest.mark.parametrize(
    ("limit", "window", "duration", "least", "jitter"),
    [
        pytest.param(10, 2.0, 60, 0.95, 0.01, id="10 per 2 s"),
        pytest.param(10, 2.0, 60, 0.95, 0.03, id="10 per 2 s, 30 ms jitter"),
        pytest.param(60, 60.0, 600, 0.97, 0.01, id="60 per 60 s"),
        pytest.param(600, 60.0, 600, 0.97, 0.01, id="600 per 60 s"),
        pytest.param(20, 1.0, 60, 0.93, 0.01, id="20 per 1 s"),
    ],
)
def test_a_backlog_uses_the_budget_without_a_single_429(
    limit: int, window: float, duration: float, least: float, jitter: float
) -> None:
    used, _, refused = _simulate(limit, window, duration, jitter=jitter)

    assert refused == 0
    assert least <= used <= 1.0


def test_half_a_budget_per_replica_leaves_room_for_the_other() -> None:
    used, _, refused = _simulate(60, 60.0, 600, share=0.5, others=0.48)

    assert refused <= 2
    assert used >= 0.85


@pytest.mark.parametrize("replicas", [2, 3, 6])
@pytest.mark.parametrize(
    ("limit", "window", "duration", "least"),
    [
        pytest.param(10, 2.0, 60, 0.80, id="10 per 2 s"),
        pytest.param(60, 60.0, 600, 0.95, id="60 per 60 s"),
        pytest.param(600, 60.0, 600, 0.95, id="600 per 60 s"),
    ],
)
def test_replicas_taking_one_share_each_spend_one_budget_without_a_429(
    replicas: int, limit: int, window: float, duration: float, least: float
) -> None:
    used, _, refused = _simulate(limit, window, duration, share=1 / replicas, replicas=replicas)

    assert refused == 0
    assert least <= used <= 1.0


def test_a_replica_counts_only_its_share_of_what_is_left() -> None:
    budget = Budget(share=0.5, margin=0.0)
    budget.observe(RateLimit(limit=10, remaining=9, reset_at=NOW + 2), budget.take(NOW), NOW, NOW)
    ticket = budget.take(NOW + 0.2)
    # Four left for both replicas when this was counted: two are ours.
    budget.observe(RateLimit(limit=10, remaining=4, reset_at=NOW + 2), ticket, NOW + 0.2, NOW + 0.2)
    before_reset = 0
    while (due := budget.next_at(NOW + 0.2)) is not None and due < NOW + 2:
        budget.take(due)
        before_reset += 1

    assert before_reset == 2  # the other two are the other replica's


def test_a_window_another_replica_opened_ends_a_window_after_our_first_answer_in_it() -> None:
    budget = Budget(margin=0.0)
    budget.observe(RateLimit(limit=10, remaining=9, reset_at=NOW + 2), budget.take(NOW), NOW, NOW)
    assert budget.window == 2.0
    for _ in range(9):  # the rest of the first window: nothing is left
        budget.take(NOW + 1)
    # Someone else opened the next window (three requests counted before ours) at 2.1; the header
    # says second 5, but it had opened by 2.3, when this answer came: it ends by 4.3.
    late = budget.take(NOW + 2.25)
    budget.observe(RateLimit(limit=10, remaining=6, reset_at=NOW + 5), late, NOW + 2.25, NOW + 2.3)
    for _ in range(6):
        budget.take(NOW + 2.3)

    assert budget.next_at(NOW + 2.3) == pytest.approx(NOW + 4.3, abs=1e-6)


def test_another_client_spending_the_same_budget_causes_no_429_storm() -> None:
    _, ok, refused = _simulate(60, 60.0, 600, others=0.3)

    assert refused <= 0.01 * (ok + refused) + 2


def test_nothing_known_means_one_probe_at_a_time() -> None:
    budget = Budget()
    ticket = budget.take(NOW)

    assert budget.next_at(NOW) is None
    budget.observe(RateLimit(limit=10, remaining=9, reset_at=NOW + 2), ticket, NOW, NOW + 0.01)
    assert budget.next_at(NOW + 0.01) == NOW + 0.01


def test_answers_without_rate_headers_are_not_paced() -> None:
    budget = Budget()
    budget.observe(None, budget.take(NOW), NOW, NOW)

    assert [budget.next_at(NOW) for _ in range(3)] == [NOW, NOW, NOW]
    budget.take(NOW)
    assert budget.next_at(NOW) == NOW


def test_a_request_that_got_no_answer_stops_probing() -> None:
    budget = Budget()
    budget.lost(budget.take(NOW))

    assert budget.next_at(NOW) == NOW


def test_the_window_is_bounded_from_both_sides_by_the_answers() -> None:
    budget = Budget(margin=0.0)
    opener = budget.take(NOW)
    budget.observe(RateLimit(limit=10, remaining=9, reset_at=NOW + 3), opener, NOW + 0.5, NOW + 0.5)
    later = budget.take(NOW + 2.4)
    budget.observe(RateLimit(limit=10, remaining=8, reset_at=NOW + 3), later, NOW + 2.4, NOW + 2.4)

    # Opened at 0.5, still counting at 2.4 and the reset is second 3: the window is 1.9 to 2.5 s.
    assert budget.window == pytest.approx(2.5)
    assert budget.spacing() == pytest.approx(0.25)


def test_the_window_is_learned_and_spacing_spreads_the_limit_over_it() -> None:
    budget = Budget(margin=0.0)
    ticket = budget.take(NOW)
    budget.observe(RateLimit(limit=10, remaining=9, reset_at=NOW + 2), ticket, NOW, NOW)

    assert budget.window == 2.0
    assert budget.spacing() == pytest.approx(0.2)


def test_a_429_blocks_every_caller_until_retry_after_and_slows_the_pace() -> None:
    budget = Budget(margin=0.0)
    budget.observe(RateLimit(limit=10, remaining=9, reset_at=NOW + 2), budget.take(NOW), NOW, NOW)
    before = budget.spacing()
    budget.refused(30, NOW)

    assert budget.blocked_until == NOW + 30
    assert budget.next_at(NOW) == NOW + 30
    assert budget.spacing() > before


def test_an_older_answer_does_not_raise_the_budget_within_a_window() -> None:
    budget = Budget()
    first, second = budget.take(NOW), budget.take(NOW)
    budget.observe(RateLimit(limit=10, remaining=1, reset_at=NOW + 10), second, NOW, NOW)
    budget.observe(RateLimit(limit=10, remaining=8, reset_at=NOW + 10), first, NOW, NOW)  # late

    budget.take(NOW)
    assert budget.next_at(NOW) == NOW + 10  # nothing left until the reset


def test_a_smaller_share_widens_the_gap_and_a_share_out_of_range_is_refused() -> None:
    budget = Budget(margin=0.0)
    budget.observe(RateLimit(limit=10, remaining=9, reset_at=NOW + 2), budget.take(NOW), NOW, NOW)
    assert budget.spacing() == pytest.approx(0.2)
    budget.share = 0.5  # a second replica joined: half the organisation's limit is ours
    assert budget.spacing() == pytest.approx(0.4)
    budget.share = 1.0  # it left
    assert budget.spacing() == pytest.approx(0.2)
    for wrong in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="rate share"):
            budget.share = wrong
    assert budget.share == 1.0
