"""The pure core: rate windows, idempotency keys, the organization's state and synthetic data."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.sandbox import SandboxConfig, data
from receiver.sandbox.errors import ApiError
from receiver.sandbox.idempotency import TTL_SECONDS, IdempotencyCache
from receiver.sandbox.ratelimit import FixedWindow
from receiver.sandbox.state import SandboxState

from .support import FakeClock

# --- rate windows -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([0, 1, 2], [(True, 1), (True, 0), (False, 0)]),
        ([0, 1, 10], [(True, 1), (True, 0), (True, 1)]),
        ([5, 14.9, 15, 15.1], [(True, 1), (True, 0), (True, 1), (True, 0)]),
    ],
    ids=["spent", "reset-after-window", "window-opens-at-first-request"],
)
def test_fixed_window_allows_limit_requests_per_window(
    times: list[float], expected: list[tuple[bool, int]]
) -> None:
    window = FixedWindow()
    got = [(q.allowed, q.remaining) for q in (window.take(t, 2, 10) for t in times)]
    assert got == expected


def test_a_refused_request_says_when_to_retry() -> None:
    window = FixedWindow()
    window.take(100.2, 1, 30)
    refused = window.take(110.2, 1, 30)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(20)
    assert refused.headers() == {
        "X-RateLimit-Limit": "1",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "131",
    }


@given(st.lists(st.floats(min_value=0, max_value=1000), max_size=200), st.integers(1, 5))
def test_no_window_ever_admits_more_than_the_limit(times: list[float], limit: int) -> None:
    window = FixedWindow()
    admitted: dict[float, int] = {}
    for t in sorted(times):
        if window.take(t, limit, 10).allowed:
            admitted[window.start] = admitted.get(window.start, 0) + 1
    assert all(n <= limit for n in admitted.values())


# --- idempotency keys -------------------------------------------------------------------------


def test_a_finished_key_replays_its_response() -> None:
    cache = IdempotencyCache()
    assert cache.begin("k", "body", now=0) is None
    cache.finish("k", 202, {"id": "anl_1"})
    replay = cache.begin("k", "body", now=1)
    assert replay is not None
    assert (replay.status, replay.body) == (202, {"id": "anl_1"})


@pytest.mark.parametrize(
    ("finished", "fingerprint", "code"),
    [
        (True, "other", "idempotency_mismatch"),
        (False, "other", "idempotency_mismatch"),
        (False, "body", "idempotency_conflict"),
    ],
    ids=["mismatch-after", "mismatch-during", "conflict-during"],
)
def test_a_reused_key_is_refused(finished: bool, fingerprint: str, code: str) -> None:
    cache = IdempotencyCache()
    cache.begin("k", "body", now=0)
    if finished:
        cache.finish("k", 202, {})
    with pytest.raises(ApiError) as caught:
        cache.begin("k", fingerprint, now=1)
    assert caught.value.code == code


@pytest.mark.parametrize("status", [402, 409, 500])
def test_an_error_response_frees_the_key(status: int) -> None:
    cache = IdempotencyCache()
    cache.begin("k", "body", now=0)
    cache.finish("k", status, {})
    assert cache.begin("k", "other", now=1) is None


def test_keys_expire_after_24_hours_and_are_swept() -> None:
    cache = IdempotencyCache()
    for n in range(3):
        cache.begin(f"k{n}", "body", now=n)
        cache.finish(f"k{n}", 202, {})
    assert cache.begin("k0", "body", now=TTL_SECONDS - 1) is not None  # still remembered
    assert cache.begin("k0", "new body", now=TTL_SECONDS) is None  # expired: a fresh request
    assert len(cache) == 3  # k1, k2 live; k0 claimed afresh
    cache.begin("x", "body", now=TTL_SECONDS + 10)
    assert len(cache) == 2  # k1, k2 swept; k0 (claimed again) and x remain


# --- the organization ---------------------------------------------------------------------------


def make(clock: FakeClock | None = None, /, **knobs: object) -> SandboxState:
    return SandboxState(SandboxConfig.model_validate({"seed": 1} | knobs), clock or FakeClock())


def test_each_analysis_costs_one_credit_until_none_is_left() -> None:
    state = make(credits=2)
    state.start_analysis("sess_1", "default", ("summary",))
    state.start_analysis("sess_1", "default", ("summary",))
    with pytest.raises(ApiError) as caught:
        state.start_analysis("sess_2", "default", ("summary",))
    assert (caught.value.status, caught.value.code) == (402, "insufficient_api_credits")
    assert state.credit_headers() == {"X-API-Credits-Remaining": "0", "X-API-Credits-Used": "2"}
    assert state.stats()["charged_by_session"] == {"sess_1": 2}


@pytest.mark.parametrize(
    ("knobs", "session", "status", "code"),
    [
        ({"organization_active": False}, "sess_1", 403, "organization_inactive"),
        ({"credits": 0, "organization_active": False}, "sess_1", 403, "organization_inactive"),
        ({"missing_sessions": ["sess_1"]}, "sess_1", 404, "not_found"),
        ({}, "call_1", 404, "not_found"),
        ({}, "sess_" + "x" * 65, 404, "not_found"),
        ({"transcript_delay_seconds": 3}, "sess_1", 409, "transcript_not_ready"),
    ],
    ids=["inactive", "inactive-before-credits", "missing", "not-a-session", "id-too-long", "no-transcript"],
)
def test_preconditions_refuse_without_charging(
    knobs: dict[str, object], session: str, status: int, code: str
) -> None:
    state = make(**knobs)
    with pytest.raises(ApiError) as caught:
        state.start_analysis(session, "default", ("summary",))
    assert (caught.value.status, caught.value.code) == (status, code)
    assert state.credits_used == 0


@pytest.mark.parametrize(
    ("configured", "key", "ok"),
    [
        (None, "sk_test_abc", True),
        (None, "sk_live_abc", True),
        (None, "pk_test_abc", False),
        (None, None, False),
        ("sk_test_exact", "sk_test_exact", True),
        ("sk_test_exact", "sk_test_other", False),
    ],
)
def test_authentication(configured: str | None, key: str | None, ok: bool) -> None:
    state = make(api_key=configured)
    if ok:
        state.authenticate(key)
    else:
        with pytest.raises(ApiError, match="invalid_api_key"):
            state.authenticate(key)


def test_an_analysis_is_processing_until_its_latency_has_passed() -> None:
    clock = FakeClock()
    state = make(clock, analysis_latency_seconds=2)
    analysis = state.start_analysis("sess_1", "default", data.INCLUDE_VALUES)
    assert state.render(analysis)["status"] == "processing"
    clock.advance(1.99)
    assert state.render(analysis)["completed_at"] is None
    clock.advance(0.01)
    result = state.render(analysis)
    assert result["status"] == "completed"
    assert set(data.INCLUDE_VALUES) <= set(result)


def test_old_shape_renders_results_wrapper_with_complete() -> None:
    state = make(result_shape="old", analysis_latency_seconds=0)
    analysis = state.start_analysis("sess_1", "default", ("keywords", "performance"))
    assert analysis.id.startswith("ana_")
    created = state.render_created(analysis)
    assert (created["status"], created["analyses"]) == ("queued", ["topics", "quality"])
    result = state.render(analysis)
    assert result["status"] == "complete"
    assert set(result["results"]) == {"topics", "quality"}


def test_the_same_seed_gives_the_same_ids_and_failures() -> None:
    def run() -> list[tuple[str, bool]]:
        state = make(analysis_failure_rate=0.5)
        analyses = [state.start_analysis("sess_1", "default", ()) for _ in range(20)]
        return [(a.id, a.fails) for a in analyses]

    first = run()
    assert first == run()
    assert {fails for _, fails in first} == {True, False}


def test_ids_sort_by_creation_time() -> None:
    clock = FakeClock()
    state = make(clock)
    ids = []
    for _ in range(5):
        ids.append(state.new_id("anl_"))
        clock.advance(0.002)
    assert ids == sorted(ids)
    assert all(len(i) == len("anl_") + 26 for i in ids)


# --- synthetic data -------------------------------------------------------------------------------


def test_results_are_deterministic_per_session_and_only_what_was_asked() -> None:
    assert data.new_results("sess_a", data.INCLUDE_VALUES) == data.new_results("sess_a", data.INCLUDE_VALUES)
    assert set(data.new_results("sess_a", ("summary", "keywords"))) == {"summary", "keywords"}
    assert data.new_results("sess_a", ()) == {}


@given(st.from_regex(r"sess_[A-Za-z0-9_-]{1,64}", fullmatch=True))
def test_every_session_has_plausible_results(session_id: str) -> None:
    result = data.new_results(session_id, data.INCLUDE_VALUES)
    assert 0 <= result["performance"]["score"] <= 1
    assert result["compliance"]["status"] in {"ok", "review"}
    assert bool(result["compliance"]["flags"]) == (result["compliance"]["status"] == "review")
    assert data.facts(session_id).duration > 0


def test_session_ids_that_ask_for_review_get_it() -> None:
    assert data.new_results("sess_needs_review", ("compliance",))["compliance"]["status"] == "review"
