"""The Store contract, issue 8 part (holes 6-9): run on every backend like ``test_contract.py``.

Retention never deletes an undelivered result; the analysis settings travel with the call; start
leases are renewed; sessions already analysed are remembered after their call row is pruned;
deliveries of a handler that is no longer configured are orphaned, and operators discard or move them.
"""

from __future__ import annotations

from receiver.lifecycle import CallState, DeliveryState
from receiver.store import EventOutcome, NewCall, Store
from receiver.store.keys import delivery_id
from tests.store.conftest import Backend
from tests.store.test_contract import (
    LEASE,
    OWNER,
    TEL,
    K,
    T,
    deliveries,
    done,
    finished,
    get,
    new,
    started,
    to,
)

DAY = 86400.0


# --- hole 6: retention never deletes an undelivered result ----------------------------------


async def test_prune_keeps_a_call_whose_delivery_is_dead_lettered(store: Store) -> None:
    await finished(store, "sess_dead", "a", now=T)
    await store.dead_letter(delivery_id("sess_dead", "a"), "HTTP 400", T + 1)
    assert (await store.prune(T + 40 * DAY, T + 40 * DAY, 100))[1] == 0
    assert (await deliveries(store, "sess_dead"))["a"].state is DeliveryState.DEAD
    assert [d.session_id for d in await store.list_dead_letters(None, None, None, 10)] == ["sess_dead"]


async def test_dead_lettering_and_replay_renew_the_time_retention_reads(store: Store) -> None:
    await finished(store, "sess_1", "a", now=T)
    await store.dead_letter(delivery_id("sess_1", "a"), "HTTP 400", T + 10 * DAY)
    assert (await get(store)).updated_at == T + 10 * DAY
    assert await store.replay_dead_letters(None, "sess_1", None, T + 20 * DAY) == 1
    assert (await get(store)).updated_at == T + 20 * DAY
    (job,) = await store.claim_deliveries("a", 5, T + 20 * DAY, LEASE, OWNER)
    await store.mark_delivered(job.delivery.id, T + 20 * DAY + 1)
    # delivered 20 days in: retention counts from then, not from the call's end
    assert await store.prune(T, T + 20 * DAY, 100) == (0, 0)
    assert await store.prune(T, T + 21 * DAY, 100) == (0, 1)


async def test_prune_keeps_a_call_with_an_orphaned_delivery(store: Store) -> None:
    await finished(store, "sess_1", "gone", now=T)
    assert await store.orphan_deliveries(["a"], T + 1) == {"gone": 1}
    assert await store.prune(T + 40 * DAY, T + 40 * DAY, 100) == (1, 0)
    assert (await deliveries(store))["gone"].state is DeliveryState.ORPHANED


# --- hole 7: the analysis settings are stored with the call ----------------------------------


async def test_the_analysis_settings_of_acceptance_travel_with_the_call(store: Store) -> None:
    call = NewCall("sess_1", "key", profile="sales", include=("sentiment", "summary"))
    assert await store.accept_call(K, "evt_1", "session.ended", call, T) is EventOutcome.ACCEPTED
    # a later event for the same call (settings changed meanwhile) keeps the first ones
    later = NewCall("sess_1", "key2", {"from": "+1"}, profile="support", include=("summary",))
    assert await store.accept_call(TEL, "tel_1", "call-ended", later, T + 1) is EventOutcome.MERGED
    (claimed,) = await store.claim_calls_to_start(10, T + 1, LEASE, OWNER)
    assert (claimed.analysis_key, claimed.analysis_profile, claimed.analysis_include) == (
        "key",
        "sales",
        ("sentiment", "summary"),
    )


async def test_a_call_without_stored_settings_reads_none(store: Store) -> None:
    await new(store, "sess_1", T)
    record = await get(store)
    assert (record.analysis_profile, record.analysis_include) == (None, None)


# --- hole 8: start leases are renewed; analysed sessions are remembered -----------------------


async def test_a_renewed_start_lease_keeps_the_call_from_other_owners(backend: Backend) -> None:
    await new(backend.store, "sess_1", T)
    (call,) = await backend.store.claim_calls_to_start(1, T, LEASE, OWNER)
    assert await backend.store.renew_call_lease("sess_1", OWNER, T + 3 * LEASE, T + LEASE / 2)
    assert not await backend.other.renew_call_lease("sess_1", "someone-else", T + 9 * LEASE, T + LEASE)
    assert await backend.other.claim_calls_to_start(1, T + 2 * LEASE, LEASE, "someone-else") == []
    (taken,) = await backend.other.claim_calls_to_start(1, T + 3 * LEASE + 1, LEASE, "someone-else")
    assert taken.session_id == call.session_id
    assert not await backend.store.renew_call_lease("sess_1", OWNER, T + 9 * LEASE, T + 3 * LEASE + 2)


async def test_renewing_the_lease_of_a_started_call_changes_nothing(store: Store) -> None:
    await started(store, "sess_1", "anl_1", T)
    assert not await store.renew_call_lease("sess_1", OWNER, T + 999, T + 1)
    assert (await get(store)).state is CallState.PROCESSING


async def test_a_session_announced_again_after_its_call_was_pruned_is_not_started_again(store: Store) -> None:
    await finished(store, "sess_1", now=T)  # no handler: delivered at once
    remembered = await store.remembered_session("sess_1")
    assert remembered is not None
    assert (remembered.analysis_key, remembered.analysis_id) == ("key", "anl_sess_1")
    assert await store.prune(T + 31 * DAY, T + 31 * DAY, 100) == (1, 1)
    assert await store.get_call("sess_1") is None
    again = NewCall("sess_1", "another-key", profile="p", include=("summary",))
    assert (
        await store.accept_call(K, "evt_again", "session.ended", again, T + 32 * DAY)
        is EventOutcome.DUPLICATE
    )
    assert (
        await store.accept_call(TEL, "tel_again", "call-ended", again, T + 32 * DAY) is EventOutcome.DUPLICATE
    )
    assert await store.get_call("sess_1") is None
    assert await store.claim_calls_to_start(10, T + 32 * DAY, LEASE, OWNER) == []


async def test_a_session_is_remembered_when_a_webhook_or_a_result_names_its_analysis(store: Store) -> None:
    await new(store, "sess_hook", T)
    await store.claim_calls_to_start(10, T, LEASE, OWNER)
    await store.request_fetch(K, "evt_fetch", "analysis.completed", "sess_hook", "anl_hook", T + 1)
    assert (await store.remembered_session("sess_hook")) is not None
    await new(store, "sess_res", T)
    await store.record_result(done("sess_res", "anl_res"), to(), T + 2)
    found = await store.remembered_session("sess_res")
    assert found is not None
    assert found.analysis_id == "anl_res"
    assert await store.remembered_session("sess_never") is None


async def test_a_call_refused_before_any_analysis_is_not_remembered(store: Store) -> None:
    await new(store, "sess_1", T)
    await store.claim_calls_to_start(10, T, LEASE, OWNER)
    await store.skip_call("sess_1", "too short", T + 1)
    assert await store.remembered_session("sess_1") is None


async def test_forget_sessions_drops_only_old_records_whose_call_is_gone(store: Store) -> None:
    await finished(store, "sess_old", now=T)
    await finished(store, "sess_kept_call", "a", now=T)
    await finished(store, "sess_new", now=T + 50 * DAY)
    await store.prune(T + 40 * DAY, T + 40 * DAY, 100)  # sess_old pruned; sess_kept_call undelivered
    assert await store.forget_sessions(T + 90 * DAY, 100) == 1
    assert await store.remembered_session("sess_old") is None
    assert await store.remembered_session("sess_kept_call") is not None
    assert await store.remembered_session("sess_new") is not None
    # forgotten: a re-announcement is a new call again (after 90 days Kallglot forgot the key too)
    fresh = NewCall("sess_old", "key")
    assert (
        await store.accept_call(K, "evt_late", "session.ended", fresh, T + 91 * DAY) is EventOutcome.ACCEPTED
    )


# --- hole 9: orphaned deliveries -------------------------------------------------------------


async def test_deliveries_of_a_handler_no_longer_configured_are_orphaned_and_never_claimed(
    store: Store,
) -> None:
    await finished(store, "sess_1", "a", "old", now=T)
    await finished(store, "sess_2", "old", now=T)
    assert await store.orphan_deliveries(["a"], T + 1) == {"old": 2}
    assert await store.orphan_deliveries(["a"], T + 2) == {"old": 2}  # idempotent
    assert await store.claim_deliveries("old", 10, T + 5, LEASE, OWNER) == []
    stats = await store.stats(T + 5)
    assert stats.orphaned == {"old": 2}
    assert stats.backlog["delivery"] == 1  # only a's: orphaned work is not a backlog that drains
    # the handler configured again: its deliveries are pending and due again
    assert await store.orphan_deliveries(["a", "old"], T + 10) == {}
    jobs = await store.claim_deliveries("old", 10, T + 10, LEASE, OWNER)
    assert sorted(j.delivery.session_id for j in jobs) == ["sess_1", "sess_2"]


async def test_discarding_orphaned_or_dead_deliveries_settles_the_call(store: Store) -> None:
    await finished(store, "sess_1", "a", "old", now=T)
    await store.mark_delivered(delivery_id("sess_1", "a"), T + 1)
    await store.orphan_deliveries(["a"], T + 2)
    await finished(store, "sess_2", "a", now=T)
    await store.dead_letter(delivery_id("sess_2", "a"), "HTTP 400", T + 3)
    await finished(store, "sess_3", "a", now=T)  # pending: not discardable
    ids = [delivery_id("sess_1", "old"), delivery_id("sess_2", "a"), delivery_id("sess_3", "a"), "dlv_nope"]
    assert await store.discard_deliveries(ids, T + 10) == 2
    assert set(await deliveries(store, "sess_1")) == {"a"}
    assert (await get(store, "sess_1")).state is CallState.DELIVERED
    assert (await get(store, "sess_2")).state is CallState.DELIVERED
    assert (await deliveries(store, "sess_3"))["a"].state is DeliveryState.PENDING
    assert (await store.stats(T + 10)).orphaned == {}
    assert await store.discard_deliveries([], T + 11) == 0


async def test_moving_deliveries_to_another_handler_delivers_them_there_once(store: Store) -> None:
    await finished(store, "sess_1", "old", now=T)
    await finished(store, "sess_2", "old", "new", now=T)  # new already has this call
    await store.orphan_deliveries(["new"], T + 1)
    await finished(store, "sess_3", "new", now=T)
    await store.dead_letter(delivery_id("sess_3", "new"), "HTTP 400", T + 2)
    ids = [delivery_id(s, "old") for s in ("sess_1", "sess_2")] + [delivery_id("sess_3", "new")]
    assert await store.move_deliveries(ids, "new", T + 10) == 2
    assert set(await deliveries(store, "sess_1")) == {"new"}
    assert set(await deliveries(store, "sess_2")) == {"new"}
    moved = (await deliveries(store, "sess_1"))["new"]
    assert (moved.id, moved.state, moved.attempts, moved.next_at) == (
        delivery_id("sess_1", "new"),
        DeliveryState.PENDING,
        0,
        T + 10,
    )
    jobs = await store.claim_deliveries("new", 10, T + 10, LEASE, OWNER)
    assert sorted(j.delivery.session_id for j in jobs) == ["sess_1", "sess_2", "sess_3"]
    for job in jobs:
        await store.mark_delivered(job.delivery.id, T + 11)
    for session in ("sess_1", "sess_2", "sess_3"):
        assert (await get(store, session)).state is CallState.DELIVERED
