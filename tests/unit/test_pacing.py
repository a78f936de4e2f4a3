"""Backoff, Retry-After, X-RateLimit-* and the pacer, on a clock driven by hand."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.pacing import Pacer, RateLimit, backoff, parse_rate_limit, parse_retry_after

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


def test_the_pacer_spreads_the_remaining_budget_over_the_window() -> None:
    pacer = Pacer(safety=1.0)
    pacer.observe(RateLimit(limit=10, remaining=10, reset_at=NOW + 10), NOW)

    waits = [pacer.reserve(NOW) for _ in range(5)]

    assert waits == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])


def test_the_pacer_waits_for_the_reset_when_nothing_is_left() -> None:
    pacer = Pacer()
    pacer.observe(RateLimit(limit=10, remaining=0, reset_at=NOW + 7), NOW)

    assert pacer.reserve(NOW) == pytest.approx(7.0)
    assert pacer.reserve(NOW + 7) == pytest.approx(0.0)


def test_a_429_blocks_every_caller_until_retry_after() -> None:
    pacer = Pacer()
    pacer.block(NOW + 30)

    assert pacer.reserve(NOW) == pytest.approx(30.0)
    assert pacer.blocked_until == NOW + 30


def test_without_headers_the_pacer_does_not_delay() -> None:
    pacer = Pacer()
    assert [pacer.reserve(NOW) for _ in range(3)] == [0.0, 0.0, 0.0]


@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=30))
def test_paced_requests_never_exceed_the_budget_within_the_window(budgets: list[int]) -> None:
    remaining = budgets[0]
    pacer = Pacer(safety=1.0)
    pacer.observe(RateLimit(limit=50, remaining=remaining, reset_at=NOW + 60), NOW)
    sent_before_reset = sum(1 for _ in range(100) if pacer.reserve(NOW) < 60)
    assert sent_before_reset <= max(remaining, 0) + 1


def test_an_older_answer_does_not_raise_the_budget_within_a_window() -> None:
    pacer = Pacer(safety=1.0)
    pacer.observe(RateLimit(limit=10, remaining=4, reset_at=NOW + 10), NOW)
    pacer.observe(RateLimit(limit=10, remaining=8, reset_at=NOW + 10), NOW)  # answered late

    assert pacer.reserve(NOW) == 0.0
    assert pacer.reserve(NOW) == pytest.approx(10 / 4)


def test_a_new_window_resets_the_budget() -> None:
    pacer = Pacer(safety=1.0)
    pacer.observe(RateLimit(limit=10, remaining=1, reset_at=NOW + 10), NOW)
    pacer.observe(RateLimit(limit=10, remaining=10, reset_at=NOW + 20), NOW + 10)

    assert pacer.reserve(NOW + 10) == 0.0
    assert pacer.reserve(NOW + 10) == pytest.approx(1.0)
