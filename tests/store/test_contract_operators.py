"""The Store contract of the operator methods (listing, replay, discard/move, pauses, read-only
opening, leases): every backend passes every test here unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.lifecycle import CallState, DeliveryState
from receiver.store import Store, StoreError, open_store
from receiver.store.keys import delivery_id
from receiver.store.operations import ReplayRequest
from receiver.store.query import CallQuery
from tests.store.conftest import Backend
from tests.store.test_contract import LEASE, OWNER, T, deliveries, finished, get, new

CONFIGURED = ("a", "b", "c")


async def _many(store: Store, count: int) -> list[str]:
    sessions = [f"sess_{i:03d}" for i in range(count)]
    for i, session in enumerate(sessions):
        await new(store, session, T + i)
    return sessions


async def test_list_calls_pages_newest_first_with_a_cursor(store: Store) -> None:
    sessions = await _many(store, 7)
    seen: list[str] = []
    query = CallQuery(limit=3)
    while True:
        page, more = await store.list_calls(query)
        seen += [call.session_id for call, _ in page]
        if not more:
            break
        last = page[-1][0]
        query = CallQuery(limit=3, cursor=(last.received_at, last.session_id))
    assert seen == list(reversed(sessions))


async def test_list_calls_filters_on_state_time_phone_handler_and_reason(store: Store) -> None:
    await new(store, "sess_old", T - 100)
    await new(store, "sess_phone", T, **{"from": "+14155550100", "to": "+1999"})
    await finished(store, "sess_done", "a", now=T + 10)
    await store.dead_letter(delivery_id("sess_done", "a"), "HTTP 410 Gone", T + 20)
    await store.skip_call("sess_old", "Too short (3 s)", T + 30)

    async def ids(**filters: object) -> list[str]:
        page, _ = await store.list_calls(CallQuery(**filters))  # type: ignore[arg-type]
        return [c.session_id for c, _ in page]

    assert await ids(states=(CallState.SKIPPED,)) == ["sess_old"]
    assert await ids(since=T - 1) == ["sess_done", "sess_phone"]
    assert await ids(until=T) == ["sess_old"]
    assert await ids(phone="+14155550100") == ["sess_phone"]
    assert await ids(phone="+1999") == ["sess_phone"]
    assert await ids(handler="a") == ["sess_done"]
    assert await ids(delivery_state=DeliveryState.DEAD) == ["sess_done"]
    assert await ids(delivery_state=DeliveryState.DELIVERED) == []
    assert await ids(reason="too SHORT") == ["sess_old"]
    assert await ids(reason="100%") == []
    assert await ids(time_field="finished", since=T + 25) == ["sess_old"]
    page, _ = await store.list_calls(CallQuery(session_id="sess_done"))
    assert [d.handler for d in page[0][1]] == ["a"]


def _request(**fields: object) -> ReplayRequest:
    return ReplayRequest(who="tester", configured=CONFIGURED, **fields)  # type: ignore[arg-type]


async def test_replay_by_ids_requeues_dead_and_delivered_and_is_recorded(store: Store) -> None:
    await finished(store, "sess_1", "a", "b", now=T)
    await store.dead_letter(delivery_id("sess_1", "a"), "HTTP 500", T + 5)
    await store.mark_delivered(delivery_id("sess_1", "b"), T + 5)
    ids = (delivery_id("sess_1", "a"), delivery_id("sess_1", "b"))
    dry = await store.replay(_request(delivery_ids=ids, dry_run=True), T + 10)
    assert (dry.matched, dry.replayed) == (2, 0)
    assert (await deliveries(store))["a"].state is DeliveryState.DEAD
    outcome = await store.replay(_request(delivery_ids=ids, description={"delivery_ids": list(ids)}), T + 20)
    assert (outcome.matched, outcome.replayed) == (2, 2)
    after = await deliveries(store)
    assert {d.state for d in after.values()} == {DeliveryState.PENDING}
    assert all(d.attempts == 0 and d.next_at == T + 20 and d.replays == 1 for d in after.values())
    assert (await get(store)).analysis_id == "anl_sess_1"  # the same analysis: nothing new started
    log = await store.list_replays(10)
    assert [(r.id, r.dry_run, r.matched, r.replayed, r.who) for r in log] == [
        (outcome.replay_id, False, 2, 2, "tester"),
        (dry.replay_id, True, 2, 0, "tester"),
    ]
    assert log[0].request == {"delivery_ids": list(ids)}


async def test_replay_by_query_reopens_delivered_calls_and_backfills_a_new_handler(store: Store) -> None:
    await finished(store, "sess_1", "a", now=T)
    await store.mark_delivered(delivery_id("sess_1", "a"), T + 5)
    await finished(store, "sess_2", "a", now=T + 100)
    await store.mark_delivered(delivery_id("sess_2", "a"), T + 105)
    await new(store, "sess_3", T + 50)  # not finished: never replayed
    assert (await get(store)).state is CallState.DELIVERED
    query = CallQuery(until=T + 60)
    outcome = await store.replay(_request(query=query, handlers=("a", "c")), T + 200)
    assert (outcome.matched, outcome.replayed) == (2, 2)  # sess_1: requeue a, create c
    assert {h: d.state for h, d in (await deliveries(store)).items()} == {
        "a": DeliveryState.PENDING,
        "c": DeliveryState.PENDING,
    }
    assert (await deliveries(store))["c"].id == delivery_id("sess_1", "c")
    assert (await get(store)).state is CallState.COMPLETED
    assert (await get(store, "sess_2")).state is CallState.DELIVERED
    jobs = await store.claim_deliveries("c", 10, T + 201, LEASE, OWNER)
    assert [j.delivery.session_id for j in jobs] == ["sess_1"]
    await store.mark_delivered(jobs[0].delivery.id, T + 202)
    await store.mark_delivered(delivery_id("sess_1", "a"), T + 202)
    assert (await get(store)).state is CallState.DELIVERED


async def test_replay_skips_pending_work_and_handlers_no_longer_configured(store: Store) -> None:
    await finished(store, "sess_1", "a", "gone", now=T)
    await store.dead_letter(delivery_id("sess_1", "gone"), "HTTP 500", T + 5)
    outcome = await store.replay(_request(query=CallQuery()), T + 10)
    assert (outcome.matched, outcome.replayed) == (0, 0)


async def test_a_paused_handler_is_paused_for_every_view_of_the_store(backend: Backend) -> None:
    await backend.store.pause_handler("a", "ops@example.com", T)
    await backend.store.pause_handler("a", "someone else", T + 1)
    assert await backend.other.paused_handlers() == {"a": ("ops@example.com", T)}
    assert await backend.other.resume_handler("a") is True
    assert await backend.store.resume_handler("a") is False
    assert await backend.store.paused_handlers() == {}


# --- opening changes nothing; read-only cannot write --------------------------------------------


async def test_opening_the_store_again_keeps_every_lease(database_url: str, store: Store) -> None:
    await new(store, "sess_1")
    await store.claim_calls_to_start(10, T, LEASE, OWNER)
    second = open_store(database_url)
    await second.open()
    await second.migrate()
    await second.close()
    assert await store.claim_calls_to_start(10, T + 1, LEASE, "another") == []


async def test_a_read_only_store_reads_and_cannot_write(database_url: str, store: Store) -> None:
    await new(store, "sess_1")
    await store.claim_calls_to_start(10, T, LEASE, OWNER)
    reader = open_store(database_url, read_only=True)
    await reader.open()
    try:
        assert (await reader.get_call("sess_1")) is not None
        with pytest.raises(StoreError):
            await reader.pause_handler("a", "x", T)
        with pytest.raises(StoreError):
            await reader.claim_calls_to_start(10, T + 1000, LEASE, "thief")
    finally:
        await reader.close()
    assert await store.paused_handlers() == {}
    assert (await get(store)).attempts == 1


async def test_read_only_sqlite_never_creates_a_database(tmp_path: Path) -> None:
    reader = open_store(f"sqlite:///{tmp_path}/nowhere/receiver.db", read_only=True)
    with pytest.raises(StoreError, match="no database file"):
        await reader.open()
    assert not (tmp_path / "nowhere").exists()


async def test_serve_releases_a_dead_processes_sqlite_leases_only_while_it_holds_the_lock(
    tmp_path: Path,
) -> None:
    from receiver.store.sqlite import SQLiteStore

    path = str(tmp_path / "receiver.db")
    first, second = SQLiteStore(path), SQLiteStore(path)
    await first.open()
    await first.migrate()
    await new(first, "sess_1")
    await first.claim_calls_to_start(10, T, LEASE, OWNER)
    assert await first.release_stale_leases(T) >= 1  # first now holds the serve lock
    await first.claim_calls_to_start(10, T, LEASE, OWNER)
    await second.open()
    assert await second.release_stale_leases(T) == 0  # a live serve holds the lock
    await first.close()  # the serve ends (a SIGKILL drops the lock too)
    assert await second.release_stale_leases(T) == 1
    await second.close()


async def test_postgres_never_releases_leases_at_start(pg_database: str) -> None:
    from receiver.store.postgres import PostgresStore

    first, second = PostgresStore(pg_database), PostgresStore(pg_database)
    await first.open()
    await second.open()
    try:
        await new(first, "sess_1")
        await first.claim_calls_to_start(10, T, LEASE, OWNER)
        assert await second.release_stale_leases(T) == 0
        assert await second.claim_calls_to_start(10, T + 1, LEASE, "another") == []
    finally:
        await first.close()
        await second.close()


async def test_attempts_are_kept_per_call_in_order_and_go_with_the_call(store: Store) -> None:
    from receiver.store.operations import Attempt

    await new(store, "sess_1")
    await store.record_attempt(Attempt("sess_1", T + 2, "delivery", "retry", "a", 503, "HTTP 503", T + 10))
    await store.record_attempt(
        Attempt("sess_1", T + 1, "start", "started", reason="analysis anl_1", request_id="req_01HX")
    )
    await store.record_attempt(Attempt("sess_gone", T, "start", "retry"))  # no such call: not kept
    attempts = await store.list_attempts("sess_1")
    assert [(a.kind, a.outcome, a.code, a.next_at, a.request_id) for a in attempts] == [
        ("start", "started", None, None, "req_01HX"),
        ("delivery", "retry", 503, T + 10, None),
    ]
    assert await store.list_attempts("sess_gone") == []


async def test_replicas_count_each_other_until_one_goes_quiet_or_leaves(backend: Backend) -> None:
    store, other = backend.store, backend.other
    assert await store.replicas_alive("r1", T, 20) == 1
    assert await other.replicas_alive("r2", T + 1, 20) == 2
    assert await store.replicas_alive("r1", T + 5, 20) == 2  # a heartbeat is not a second replica
    # r2 said nothing for longer than the ttl: r1 stops counting it
    assert await store.replicas_alive("r1", T + 22, 20) == 1
    assert await other.replicas_alive("r2", T + 23, 20) == 2  # it speaks again: counted again
    await other.replica_gone("r2")
    assert await store.replicas_alive("r1", T + 24, 20) == 1
    await other.replica_gone("nobody")  # forgetting an unknown replica is no error
