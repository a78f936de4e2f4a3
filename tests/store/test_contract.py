"""The Store contract: every backend (SQLite, PostgreSQL) must pass every test here unchanged."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from receiver.lifecycle import CallState, DeliveryState
from receiver.store import (
    AnalysisResult,
    CallRecord,
    DeliveryRecord,
    EventOutcome,
    NewCall,
    Store,
    StoreUnavailable,
)
from receiver.store.keys import delivery_id
from receiver.store.postgres import PostgresStore
from receiver.store.sqlite import SQLiteStore
from tests.store.conftest import Backend

T = 1_000_000.0
K, TEL = "kallglot", "telephony"
OWNER = "test-owner"
LEASE = 60.0


def to(*handlers: str) -> list[str]:
    """The handlers subscribed to a result (the use case's choice; the store runs no domain code)."""
    return list(handlers)


def done(session: str | None, analysis: str | None = "anl_1", *, failed: bool = False) -> AnalysisResult:
    state = CallState.FAILED if failed else CallState.COMPLETED
    body = {"id": analysis, "status": state.value, "summary": "ok"}
    return AnalysisResult(session, analysis, state, body, "poll", "boom" if failed else None)


async def new(store: Store, session: str = "sess_1", now: float = T, **call: Any) -> None:
    outcome = await store.accept_call(
        K, f"evt_{session}_{now}", "session.ended", NewCall(session, "key"), now
    )
    assert outcome is EventOutcome.ACCEPTED
    if call:
        await store.accept_call(TEL, f"tel_{session}", "call-ended", NewCall(session, "key", call), now)


async def get(store: Store, session: str = "sess_1") -> CallRecord:
    found = await store.get_call(session)
    assert found is not None
    return found[0]


async def deliveries(store: Store, session: str = "sess_1") -> dict[str, DeliveryRecord]:
    found = await store.get_call(session)
    assert found is not None
    return {d.handler: d for d in found[1]}


async def started(store: Store, session: str = "sess_1", analysis: str = "anl_1", now: float = T) -> None:
    """A call whose analysis Kallglot accepted (processing, first poll at now + 30)."""
    await new(store, session, now)
    claimed = await store.claim_calls_to_start(100, now, LEASE, OWNER)
    assert session in {c.session_id for c in claimed}
    await store.mark_started(session, analysis, now + 30, now)


async def finished(store: Store, session: str = "sess_1", *handlers: str, now: float = T) -> None:
    await started(store, session, f"anl_{session}", now)
    assert await store.record_result(done(session, f"anl_{session}"), to(*handlers), now + 1) is not None


# --- schema ---------------------------------------------------------------------------------


async def test_migrate_again_applies_nothing_and_is_ready(store: Store) -> None:
    assert await store.migrate() == 0
    assert await store.ready() is True


async def test_replicas_migrating_together_apply_each_migration_once(pg_empty_database: str) -> None:
    stores = [PostgresStore(pg_empty_database, max_size=2) for _ in range(3)]
    for store in stores:
        await store.open()
    try:
        assert not await stores[0].ready()
        applied = await asyncio.gather(*(store.migrate() for store in stores))
        assert sum(applied) >= 1
        assert sorted(applied)[:-1] == [0, 0]
        assert all([await store.ready() for store in stores])
    finally:
        for store in stores:
            await store.close()


async def test_unreachable_postgres_is_unavailable_and_not_ready() -> None:
    from tests.pg import free_port

    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{free_port()}/x", connect_timeout=1)
    with pytest.raises(StoreUnavailable):
        await store.open()
    assert await store.ready() is False
    with pytest.raises(StoreUnavailable):
        await store.claim_calls_to_start(1, T, LEASE, OWNER)


async def test_a_store_that_is_not_open_is_unavailable(database_url: str) -> None:
    store: Store = (
        SQLiteStore(database_url.removeprefix("sqlite:///"))
        if database_url.startswith("sqlite")
        else PostgresStore(database_url)
    )
    assert await store.ready() is False
    with pytest.raises(StoreUnavailable):
        await store.accept_call(K, "evt", "session.ended", NewCall("sess_x", "key"), T)


# --- inbound --------------------------------------------------------------------------------


async def test_accept_call_creates_a_received_call_due_now(store: Store) -> None:
    call = NewCall("sess_1", "key", {"from": "+1"}, end_session=True)
    assert await store.accept_call(TEL, "msg_1", "call-ended", call, T) is EventOutcome.ACCEPTED
    record = await get(store)
    assert (record.state, record.next_at, record.received_at) == (CallState.RECEIVED, T, T)
    assert (record.fields, record.end_session, record.analysis_key) == ({"from": "+1"}, True, "key")
    assert (record.attempts, record.analysis_id, record.analysis) == (0, None, None)


async def test_the_same_event_id_is_a_duplicate_and_changes_nothing(store: Store) -> None:
    await store.accept_call(TEL, "msg_1", "call-ended", NewCall("sess_1", "key", {"a": 1}), T)
    again = NewCall("sess_1", "key", {"a": 2}, end_session=True)
    assert await store.accept_call(TEL, "msg_1", "call-ended", again, T + 1) is EventOutcome.DUPLICATE
    record = await get(store)
    assert (record.fields, record.end_session, record.updated_at) == ({"a": 1}, False, T)


async def test_event_ids_are_scoped_by_source(store: Store) -> None:
    await store.accept_call(K, "evt_1", "session.ended", NewCall("sess_1", "key"), T)
    outcome = await store.accept_call(TEL, "evt_1", "call-ended", NewCall("sess_1", "key"), T)
    assert outcome is EventOutcome.MERGED


async def test_a_second_event_for_the_call_merges_its_fields(store: Store) -> None:
    first = NewCall("sess_1", "key", {"agent": {"id": "u_1", "email": "a@x"}, "to": "+2", "gone": 1})
    await store.accept_call(K, "evt_1", "session.ended", first, T)
    second = NewCall("sess_1", "key", {"agent": {"email": "b@x"}, "gone": None, "from": "+1"}, True)
    assert await store.accept_call(TEL, "msg_1", "call-ended", second, T + 5) is EventOutcome.MERGED
    record = await get(store)
    assert record.fields == {"agent": {"id": "u_1", "email": "b@x"}, "to": "+2", "from": "+1"}
    assert (record.end_session, record.received_at, record.updated_at) == (True, T, T + 5)
    third = NewCall("sess_1", "key", {}, end_session=False)
    await store.accept_call(TEL, "msg_2", "call-ended", third, T + 6)
    assert (await get(store)).end_session is True


async def test_duplicates_arriving_together_store_the_event_once(backend: Backend) -> None:
    stores = [backend.store, backend.other] * 10
    outcomes = await asyncio.gather(
        *(s.accept_call(K, "evt_1", "session.ended", NewCall("sess_1", "key"), T) for s in stores)
    )
    assert Counter(outcomes) == {EventOutcome.ACCEPTED: 1, EventOutcome.DUPLICATE: 19}


async def test_different_events_for_one_call_arriving_together_create_it_once(backend: Backend) -> None:
    stores = [backend.store, backend.other] * 10
    outcomes = await asyncio.gather(
        *(
            s.accept_call(K, f"evt_{i}", "session.ended", NewCall("sess_1", "key", {f"f{i}": i}), T)
            for i, s in enumerate(stores)
        )
    )
    assert Counter(outcomes) == {EventOutcome.ACCEPTED: 1, EventOutcome.MERGED: 19}
    assert (await get(backend.store)).fields == {f"f{i}": i for i in range(20)}


# --- starting -------------------------------------------------------------------------------


async def test_claiming_leases_due_calls_oldest_first_and_moves_them_to_starting(store: Store) -> None:
    for i in range(3):
        await new(store, f"sess_{i}", T - i)
    await new(store, "sess_later", T + 100)
    claimed = await store.claim_calls_to_start(2, T, LEASE, OWNER)
    assert [c.session_id for c in claimed] == ["sess_2", "sess_1"]
    assert all(c.state is CallState.STARTING and c.attempts == 1 for c in claimed)
    rest = await store.claim_calls_to_start(10, T, LEASE, OWNER)
    assert [c.session_id for c in rest] == ["sess_0"]
    assert await store.claim_calls_to_start(10, T, LEASE, OWNER) == []


async def test_a_lease_expires_and_another_owner_takes_the_call_over(backend: Backend) -> None:
    await new(backend.store)
    assert len(await backend.store.claim_calls_to_start(1, T, LEASE, "dead-replica")) == 1
    assert await backend.other.claim_calls_to_start(1, T + LEASE - 1, LEASE, OWNER) == []
    again = await backend.other.claim_calls_to_start(1, T + LEASE + 1, LEASE, OWNER)
    assert [(c.session_id, c.state, c.attempts) for c in again] == [("sess_1", CallState.STARTING, 2)]


async def test_racing_claims_never_return_the_same_call_twice(backend: Backend) -> None:
    for i in range(60):
        await backend.store.accept_call(K, f"e{i}", "session.ended", NewCall(f"sess_{i}", "key"), T)
    stores = [backend.store, backend.other] * 6
    batches = await asyncio.gather(
        *(s.claim_calls_to_start(7, T, LEASE, f"o{i}") for i, s in enumerate(stores))
    )
    claimed = [c.session_id for batch in batches for c in batch]
    assert len(claimed) == len(set(claimed)) == 60


async def test_mark_started_moves_to_processing_and_schedules_the_first_poll(store: Store) -> None:
    await new(store)
    await store.claim_calls_to_start(1, T, LEASE, OWNER)
    await store.mark_started("sess_1", "anl_1", T + 30, T + 1)
    record = await get(store)
    assert (record.state, record.analysis_id, record.next_at, record.started_at) == (
        CallState.PROCESSING,
        "anl_1",
        T + 30,
        T + 1,
    )
    assert await store.claim_calls_to_start(1, T + 1000, LEASE, OWNER) == []


async def test_mark_started_after_the_call_finished_keeps_it_finished(store: Store) -> None:
    await new(store)
    await store.claim_calls_to_start(1, T, LEASE, OWNER)
    assert await store.record_result(done("sess_1", "anl_1"), to("h"), T + 1) is not None
    await store.mark_started("sess_1", "anl_1", T + 30, T + 2)
    assert (await get(store)).state is CallState.COMPLETED


async def test_retry_call_releases_the_lease_until_next_at(store: Store) -> None:
    await new(store)
    await store.claim_calls_to_start(1, T, LEASE, OWNER)
    await store.retry_call("sess_1", T + 10, "rate limited", T + 1)
    record = await get(store)
    assert (record.state, record.next_at, record.reason) == (CallState.STARTING, T + 10, "rate limited")
    assert await store.claim_calls_to_start(1, T + 9, LEASE, OWNER) == []
    assert len(await store.claim_calls_to_start(1, T + 10, LEASE, OWNER)) == 1


async def test_a_skipped_call_is_never_started_nor_finished(store: Store) -> None:
    await new(store)
    await store.claim_calls_to_start(1, T, LEASE, OWNER)
    await store.skip_call("sess_1", "too short", T + 1)
    record = await get(store)
    assert (record.state, record.reason, record.finished_at) == (CallState.SKIPPED, "too short", T + 1)
    assert await store.claim_calls_to_start(1, T + 1000, LEASE, OWNER) == []
    assert await store.record_result(done("sess_1"), to("h"), T + 2) is None


async def test_mark_session_ended_clears_the_request(store: Store) -> None:
    await store.accept_call(TEL, "m", "call-ended", NewCall("sess_1", "key", end_session=True), T)
    await store.mark_session_ended("sess_1", T + 1)
    assert (await get(store)).end_session is False


# --- results --------------------------------------------------------------------------------


async def test_finish_completes_the_call_and_creates_one_delivery_per_handler(store: Store) -> None:
    await started(store)
    outcome = await store.record_result(done("sess_1"), to("a", "b", "a"), T + 5)
    assert outcome is not None
    assert (outcome.session_id, outcome.via, outcome.started_at, outcome.deliveries) == (
        "sess_1",
        "poll",
        T,
        2,
    )
    record = await get(store)
    assert (record.state, record.finished_at, record.finished_via) == (CallState.COMPLETED, T + 5, "poll")
    assert record.analysis == {"id": "anl_1", "status": "completed", "summary": "ok"}
    made = await deliveries(store)
    assert set(made) == {"a", "b"}
    assert made["a"].id == delivery_id("sess_1", "a")
    assert (made["a"].state, made["a"].status, made["a"].next_at) == (
        DeliveryState.PENDING,
        "completed",
        T + 5,
    )


async def test_a_second_result_changes_nothing_and_delivers_nothing_twice(store: Store) -> None:
    await started(store)
    await store.record_result(done("sess_1"), to("a"), T + 5)
    assert await store.record_result(done("sess_1", failed=True), to("a", "b"), T + 6) is None
    record = await get(store)
    assert (record.state, record.finished_at) == (CallState.COMPLETED, T + 5)
    assert set(await deliveries(store)) == {"a"}


async def test_results_racing_finish_the_call_exactly_once(backend: Backend) -> None:
    await started(backend.store)
    stores = [backend.store, backend.other] * 5
    outcomes = await asyncio.gather(*(s.record_result(done("sess_1"), to("a", "b"), T + 5) for s in stores))
    assert sum(outcome is not None for outcome in outcomes) == 1
    assert len(await deliveries(backend.store)) == 2


async def test_a_failed_analysis_is_delivered_as_failed(store: Store) -> None:
    await started(store)
    await store.record_result(done("sess_1", failed=True), to("a"), T + 5)
    record = await get(store)
    assert (record.state, record.reason) == (CallState.FAILED, "boom")
    assert (await deliveries(store))["a"].status == "failed"


async def test_a_result_no_handler_wants_is_delivered_at_once(store: Store) -> None:
    await started(store)
    outcome = await store.record_result(done("sess_1"), to(), T + 5)
    assert outcome is not None
    assert outcome.deliveries == 0
    record = await get(store)
    assert (record.state, record.delivered_at) == (CallState.DELIVERED, T + 5)


async def test_finish_finds_the_call_by_analysis_id(store: Store) -> None:
    await started(store, analysis="anl_9")
    assert await store.record_result(done(None, "anl_9"), to("a"), T + 5) is not None
    assert (await get(store)).state is CallState.COMPLETED


async def test_a_claimed_delivery_carries_the_call_fields_and_the_analysis(store: Store) -> None:
    # ``when`` is evaluated at delivery time, on the document built from what the claim returns.
    await new(store, crm="42")
    await store.record_result(done("sess_1"), to("a"), T + 1)
    [job] = await store.claim_deliveries("a", 10, T + 1, LEASE, OWNER)
    assert (job.call, job.analysis, job.analysis_id) == (
        {"crm": "42"},
        {"id": "anl_1", "status": "completed", "summary": "ok"},
        "anl_1",
    )


async def test_accept_analysis_records_the_event_and_finishes_the_call(store: Store) -> None:
    await started(store)
    result = AnalysisResult("sess_1", "anl_1", CallState.COMPLETED, {"status": "completed"}, "webhook")
    outcome, fin = await store.accept_analysis(K, "evt_a", "analysis.complete", result, to("a"), T + 5)
    assert outcome is EventOutcome.ACCEPTED
    assert fin is not None
    assert fin.via == "webhook"
    again = await store.accept_analysis(K, "evt_a", "analysis.complete", result, to("a"), T + 6)
    assert again == (EventOutcome.DUPLICATE, None)
    late = await store.accept_analysis(K, "evt_b", "analysis.complete", result, to("a"), T + 7)
    assert late == (EventOutcome.IGNORED, None)
    assert len(await deliveries(store)) == 1


@pytest.mark.parametrize(
    ("session", "analysis"),
    [("sess_unknown", "anl_1"), ("sess_1", "anl_other"), (None, "anl_unknown")],
    ids=["unknown-call", "foreign-analysis", "unknown-analysis"],
)
async def test_accept_analysis_ignores_results_about_another_analysis(
    store: Store, session: str | None, analysis: str
) -> None:
    await started(store, analysis="anl_1")
    result = AnalysisResult(session, analysis, CallState.COMPLETED, {"status": "completed"}, "webhook")
    assert await store.accept_analysis(K, "e", "analysis.complete", result, to("a"), T + 5) == (
        EventOutcome.IGNORED,
        None,
    )
    assert (await get(store)).state is CallState.PROCESSING


async def test_request_fetch_makes_the_poll_due_now_and_counts_the_finish_as_webhook(store: Store) -> None:
    await started(store)
    assert (
        await store.request_fetch(K, "e", "analysis.complete", "sess_1", "anl_1", T + 2)
        is EventOutcome.ACCEPTED
    )
    assert (
        await store.request_fetch(K, "e", "analysis.complete", "sess_1", "anl_1", T + 3)
        is EventOutcome.DUPLICATE
    )
    assert (await get(store)).next_at == T + 2
    polled = await store.claim_calls_to_poll(5, T + 2, LEASE, OWNER)
    assert [c.session_id for c in polled] == ["sess_1"]
    fin = await store.record_result(done("sess_1"), to("a"), T + 4)
    assert fin is not None
    assert fin.via == "webhook"


async def test_request_fetch_for_a_starting_call_moves_it_to_processing(store: Store) -> None:
    await new(store)
    await store.claim_calls_to_start(1, T, LEASE, OWNER)
    assert (
        await store.request_fetch(K, "e", "analysis.complete", None, "anl_1", T + 1) is EventOutcome.IGNORED
    )
    assert (
        await store.request_fetch(K, "f", "analysis.complete", "sess_1", "anl_1", T + 1)
        is EventOutcome.ACCEPTED
    )
    record = await get(store)
    assert (record.state, record.analysis_id, record.started_at) == (CallState.PROCESSING, "anl_1", T + 1)
    assert len(await store.claim_calls_to_poll(5, T + 1, LEASE, OWNER)) == 1
    await store.mark_started("sess_1", "anl_1", T + 30, T + 2)
    assert (await get(store)).state is CallState.PROCESSING


async def test_a_late_post_answer_keeps_the_schedule_the_webhook_set(store: Store) -> None:
    await new(store)
    await store.claim_calls_to_start(1, T, LEASE, OWNER)
    await store.request_fetch(K, "f", "analysis.complete", "sess_1", "anl_1", T + 1)
    await store.schedule_poll("sess_1", T + 50, False, T + 1)  # the poller looked too early
    await store.mark_started("sess_1", "anl_1", T + 30, T + 2)
    assert (await get(store)).next_at == T + 50


@pytest.mark.parametrize(
    ("session", "analysis"),
    [("sess_unknown", "anl_1"), ("sess_1", "anl_other"), (None, "anl_unknown")],
    ids=["unknown-call", "foreign-analysis", "unknown-analysis"],
)
async def test_request_fetch_ignores_foreign_analyses(
    store: Store, session: str | None, analysis: str
) -> None:
    await started(store)
    assert (
        await store.request_fetch(K, "e", "analysis.complete", session, analysis, T + 2)
        is EventOutcome.IGNORED
    )
    assert (await get(store)).next_at == T + 30


async def test_request_fetch_for_a_finished_call_is_ignored(store: Store) -> None:
    await finished(store, "sess_1", "a")
    assert (
        await store.request_fetch(K, "e", "analysis.complete", "sess_1", "anl_sess_1", T + 5)
        is EventOutcome.IGNORED
    )


# --- polling --------------------------------------------------------------------------------


async def test_poll_claims_lease_due_in_flight_calls_and_count_polls(backend: Backend) -> None:
    store = backend.store
    await started(store, "sess_1", now=T)
    await started(store, "sess_2", "anl_2", now=T + 10)
    assert await store.claim_calls_to_poll(5, T + 29, LEASE, OWNER) == []
    polled = await store.claim_calls_to_poll(5, T + 30, LEASE, OWNER)
    assert [(c.session_id, c.polls) for c in polled] == [("sess_1", 1)]
    assert await backend.other.claim_calls_to_poll(5, T + 31, LEASE, OWNER) == []
    again = await backend.other.claim_calls_to_poll(5, T + 30 + LEASE + 1, LEASE, OWNER)
    assert sorted((c.session_id, c.polls) for c in again) == [("sess_1", 2), ("sess_2", 1)]


async def test_schedule_poll_releases_the_lease_and_may_mark_the_call_stale(store: Store) -> None:
    await started(store)
    await store.claim_calls_to_poll(1, T + 30, LEASE, OWNER)
    await store.schedule_poll("sess_1", T + 40, False, T + 31)
    assert ((await get(store)).state, (await get(store)).next_at) == (CallState.PROCESSING, T + 40)
    await store.claim_calls_to_poll(1, T + 40, LEASE, OWNER)
    await store.schedule_poll("sess_1", T + 900, True, T + 41)
    assert (await get(store)).state is CallState.STALE
    polled = await store.claim_calls_to_poll(1, T + 900, LEASE, OWNER)
    assert [c.state for c in polled] == [CallState.STALE]
    assert await store.record_result(done("sess_1"), to("a"), T + 901) is not None


async def test_schedule_poll_of_a_finished_call_changes_nothing(store: Store) -> None:
    await finished(store, "sess_1", "a")
    await store.schedule_poll("sess_1", T + 999, True, T + 5)
    record = await get(store)
    assert record.state is CallState.COMPLETED
    assert record.next_at != T + 999


# --- delivering -----------------------------------------------------------------------------


async def test_claim_deliveries_leases_one_handlers_due_deliveries_oldest_first(store: Store) -> None:
    await finished(store, "sess_2", "a", "b", now=T + 10)
    await finished(store, "sess_1", "a", now=T)
    await store.accept_call(TEL, "m", "call-ended", NewCall("sess_1", "key", {"from": "+1"}), T + 20)
    jobs = await store.claim_deliveries("a", 10, T + 20, LEASE, OWNER)
    assert [j.delivery.session_id for j in jobs] == ["sess_1", "sess_2"]
    job = jobs[0]
    assert (job.call, job.analysis_id, job.call_received_at) == ({"from": "+1"}, "anl_sess_1", T)
    assert job.analysis["status"] == "completed"
    assert (job.delivery.first_attempt_at, job.delivery.attempts) == (T + 20, 0)
    assert await store.claim_deliveries("a", 10, T + 21, LEASE, OWNER) == []
    assert len(await store.claim_deliveries("b", 10, T + 21, LEASE, OWNER)) == 1


async def test_racing_delivery_claims_never_return_the_same_delivery_twice(backend: Backend) -> None:
    for i in range(20):
        await finished(backend.store, f"sess_{i}", "a")
    stores = [backend.store, backend.other] * 4
    batches = await asyncio.gather(*(s.claim_deliveries("a", 4, T + 5, LEASE, OWNER) for s in stores))
    claimed = [job.delivery.id for batch in batches for job in batch]
    assert len(claimed) == len(set(claimed)) == 20


async def test_the_last_delivery_makes_the_call_delivered(store: Store) -> None:
    await finished(store, "sess_1", "a", "b")
    made = await deliveries(store)
    await store.mark_delivered(made["a"].id, T + 5)
    assert (await get(store)).state is CallState.COMPLETED
    await store.mark_delivered(made["b"].id, T + 6)
    record = await get(store)
    assert (record.state, record.delivered_at) == (CallState.DELIVERED, T + 6)
    after = await deliveries(store)
    assert (after["b"].state, after["b"].attempts, after["b"].delivered_at) == (
        DeliveryState.DELIVERED,
        1,
        T + 6,
    )


async def test_handlers_finishing_together_still_deliver_the_call(backend: Backend) -> None:
    handlers = [f"h{i}" for i in range(6)]
    await finished(backend.store, "sess_1", *handlers)
    made = await deliveries(backend.store)
    stores = [backend.store, backend.other] * 3
    await asyncio.gather(
        *(s.mark_delivered(made[h].id, T + 5) for s, h in zip(stores, handlers, strict=True))
    )
    assert (await get(backend.store)).state is CallState.DELIVERED


async def test_retry_delivery_counts_the_attempt_and_releases_until_next_at(store: Store) -> None:
    await finished(store, "sess_1", "a")
    (job,) = await store.claim_deliveries("a", 1, T + 5, LEASE, OWNER)
    await store.retry_delivery(job.delivery.id, T + 50, "HTTP 502", T + 6)
    d = (await deliveries(store))["a"]
    assert (d.state, d.attempts, d.last_error, d.next_at) == (DeliveryState.PENDING, 1, "HTTP 502", T + 50)
    assert await store.claim_deliveries("a", 1, T + 49, LEASE, OWNER) == []
    (again,) = await store.claim_deliveries("a", 1, T + 50, LEASE, OWNER)
    assert (again.delivery.attempts, again.delivery.first_attempt_at) == (1, T + 5)


async def test_release_delivery_gives_it_back_without_an_attempt(store: Store) -> None:
    await finished(store, "sess_1", "a")
    (job,) = await store.claim_deliveries("a", 1, T + 5, LEASE, OWNER)
    await store.release_delivery(job.delivery.id, T + 7)
    d = (await deliveries(store))["a"]
    assert (d.attempts, d.next_at) == (0, T + 7)
    assert len(await store.claim_deliveries("a", 1, T + 7, LEASE, OWNER)) == 1


async def test_dead_letters_are_listed_and_replayed_without_a_new_analysis(store: Store) -> None:
    await finished(store, "sess_1", "a", "b", now=T)
    await finished(store, "sess_2", "a", now=T + 100)
    for session, handler, at in (("sess_1", "a", T + 10), ("sess_1", "b", T + 11), ("sess_2", "a", T + 110)):
        await store.dead_letter(delivery_id(session, handler), "HTTP 400", at)
    dead = await store.list_dead_letters(None, None, None, 10)
    assert [(d.session_id, d.handler) for d in dead] == [("sess_1", "a"), ("sess_1", "b"), ("sess_2", "a")]
    assert all(d.state is DeliveryState.DEAD and d.attempts == 1 for d in dead)
    assert len(await store.list_dead_letters("a", None, None, 10)) == 2
    assert len(await store.list_dead_letters(None, "sess_1", None, 10)) == 2
    assert len(await store.list_dead_letters(None, None, T + 11, 10)) == 2
    assert len(await store.list_dead_letters(None, None, None, 1)) == 1
    assert await store.replay_dead_letters("a", None, T + 50, T + 200) == 1
    assert await store.replay_dead_letters("a", None, T + 50, T + 201) == 0
    replayed = (await deliveries(store, "sess_2"))["a"]
    assert (replayed.state, replayed.attempts, replayed.next_at, replayed.replays, replayed.dead_at) == (
        DeliveryState.PENDING,
        0,
        T + 200,
        1,
        None,
    )
    (job,) = await store.claim_deliveries("a", 5, T + 200, LEASE, OWNER)
    await store.mark_delivered(job.delivery.id, T + 201)
    assert (await get(store, "sess_2")).state is CallState.DELIVERED
    assert await store.replay_dead_letters(None, "sess_1", None, T + 300) == 2


async def test_outcomes_of_a_delivery_that_is_no_longer_pending_change_nothing(store: Store) -> None:
    await finished(store, "sess_1", "a")
    did = delivery_id("sess_1", "a")
    await store.mark_delivered(did, T + 5)
    await store.dead_letter(did, "late", T + 6)
    await store.retry_delivery(did, T + 7, "late", T + 7)
    d = (await deliveries(store))["a"]
    assert (d.state, d.attempts, d.last_error) == (DeliveryState.DELIVERED, 1, None)


# --- admin and upkeep -----------------------------------------------------------------------


async def test_get_call_of_an_unknown_session_is_none(store: Store) -> None:
    assert await store.get_call("sess_nope") is None


async def test_stats_report_backlog_age_dead_letters_and_states(store: Store) -> None:
    await started(store, "sess_run", "anl_run", T + 10)
    await finished(store, "sess_fin", "a", "b", now=T + 20)
    await new(store, "sess_new", T)
    await store.dead_letter(delivery_id("sess_fin", "b"), "HTTP 400", T + 30)
    stats = await store.stats(T + 100)
    assert stats.backlog == {"start": 1, "analysis": 1, "delivery": 1}
    assert stats.oldest == {"start": 100.0, "analysis": 90.0, "delivery": 79.0}
    assert stats.dead_letters == {"b": 1}
    assert stats.calls_by_state == {"received": 1, "processing": 1, "completed": 1}


async def test_stats_of_an_empty_store(store: Store) -> None:
    stats = await store.stats(T)
    assert stats.backlog == {"start": 0, "analysis": 0, "delivery": 0}
    assert stats.oldest == {"start": 0.0, "analysis": 0.0, "delivery": 0.0}
    assert (stats.dead_letters, stats.calls_by_state) == ({}, {})


async def test_prune_deletes_old_event_ids_and_finished_calls_only(store: Store) -> None:
    await finished(store, "sess_old", now=T)  # no handler: delivered at once
    await finished(store, "sess_pending", "a", now=T)
    await new(store, "sess_waiting", T)
    await finished(store, "sess_recent", now=T + 500)
    events, calls = await store.prune(T + 100, T + 100, 100)
    assert (events, calls) == (3, 1)
    assert await store.get_call("sess_old") is None
    for kept in ("sess_pending", "sess_waiting", "sess_recent"):
        assert await store.get_call(kept) is not None
    # the event id is gone, so a (very) late retry of it is a new event again: merged, not re-created
    again = await store.accept_call(
        K, f"evt_sess_waiting_{T}", "session.ended", NewCall("sess_waiting", "k"), T
    )
    assert again is EventOutcome.MERGED


async def test_prune_removes_the_deliveries_with_the_call_and_works_in_batches(store: Store) -> None:
    for i in range(5):
        await finished(store, f"sess_{i}", "a", now=T)
        await store.mark_delivered(delivery_id(f"sess_{i}", "a"), T + 1)
    assert await store.prune(T + 100, T + 100, 2) == (2, 2)
    assert await store.prune(T + 100, T + 100, 2) == (2, 2)
    assert await store.prune(T + 100, T + 100, 2) == (1, 1)
    assert await store.prune(T + 100, T + 100, 2) == (0, 0)
    assert await store.list_dead_letters(None, None, None, 10) == []
    assert (await store.stats(T + 100)).calls_by_state == {}


# --- wake-ups -------------------------------------------------------------------------------


async def test_other_replicas_are_woken_by_new_work_but_not_the_writer(backend: Backend) -> None:
    mine: list[str] = []
    theirs: list[str] = []
    backend.store.subscribe(mine.append)
    backend.other.subscribe(theirs.append)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (5 if backend.name == "postgres" else 0.5)
    i = 0
    while "start" not in theirs and loop.time() < deadline:  # until the listener is connected
        i += 1
        await backend.store.accept_call(K, f"e{i}", "session.ended", NewCall(f"sess_w{i}", "key"), T)
        await asyncio.sleep(0.05)
    await finished(backend.store, "sess_1", "a")
    while "deliver" not in theirs and loop.time() < deadline:
        await asyncio.sleep(0.02)
    if backend.name == "sqlite":  # one process: nobody else creates work, subscribe never calls back
        assert theirs == []
    else:
        assert {"start", "deliver"} <= set(theirs)
    assert mine == []
