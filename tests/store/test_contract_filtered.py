"""The Store contract for filtered deliveries (issue 10 item 3), on every backend like ``test_contract.py``.

A finished call gets one pending delivery per subscribed handler, whatever its ``when``; the
delivering use case evaluates ``when`` and marks a delivery that does not match ``filtered``: a
terminal state that counts as done, so a call whose deliveries are all delivered or filtered is
``delivered``.
"""

from __future__ import annotations

import asyncio

from receiver.lifecycle import CallState, DeliveryState
from receiver.store import Store
from receiver.store.keys import delivery_id
from receiver.store.operations import ReplayRequest
from tests.store.conftest import Backend
from tests.store.test_contract import LEASE, OWNER, T, deliveries, finished, get

DAY = 86400.0


async def test_a_filtered_delivery_is_done_without_an_attempt_and_never_claimed(store: Store) -> None:
    await finished(store, "sess_1", "a", "b")
    (job,) = await store.claim_deliveries("a", 1, T + 5, LEASE, OWNER)
    await store.mark_filtered(job.delivery.id, T + 6)
    made = await deliveries(store)
    assert (made["a"].state, made["a"].attempts, made["a"].delivered_at, made["a"].last_error) == (
        DeliveryState.FILTERED,
        0,
        None,
        None,
    )
    assert await store.claim_deliveries("a", 1, T + 1000, LEASE, OWNER) == []
    assert (await get(store)).state is CallState.COMPLETED  # b is still pending
    await store.mark_delivered(made["b"].id, T + 7)
    record = await get(store)
    assert (record.state, record.delivered_at) == (CallState.DELIVERED, T + 7)


async def test_a_call_whose_deliveries_are_all_filtered_is_delivered(store: Store) -> None:
    await finished(store, "sess_1", "a", "b")
    await store.mark_filtered(delivery_id("sess_1", "a"), T + 5)
    await store.mark_filtered(delivery_id("sess_1", "b"), T + 6)
    record = await get(store)
    assert (record.state, record.delivered_at) == (CallState.DELIVERED, T + 6)


async def test_mark_filtered_changes_only_a_pending_delivery(store: Store) -> None:
    await finished(store, "sess_1", "a", "b")
    await store.dead_letter(delivery_id("sess_1", "a"), "HTTP 400", T + 5)
    await store.mark_delivered(delivery_id("sess_1", "b"), T + 5)
    await store.mark_filtered(delivery_id("sess_1", "a"), T + 6)
    await store.mark_filtered(delivery_id("sess_1", "b"), T + 6)
    made = await deliveries(store)
    assert (made["a"].state, made["b"].state) == (DeliveryState.DEAD, DeliveryState.DELIVERED)
    assert (await get(store)).state is CallState.COMPLETED


async def test_handlers_filtered_and_delivered_together_still_deliver_the_call(backend: Backend) -> None:
    handlers = [f"h{i}" for i in range(6)]
    await finished(backend.store, "sess_1", *handlers)
    stores = [backend.store, backend.other] * 3
    await asyncio.gather(
        *(
            (s.mark_filtered if i % 2 else s.mark_delivered)(delivery_id("sess_1", h), T + 5)
            for i, (s, h) in enumerate(zip(stores, handlers, strict=True))
        )
    )
    assert (await get(backend.store)).state is CallState.DELIVERED


async def test_discarding_the_last_undelivered_one_beside_a_filtered_one_delivers_the_call(
    store: Store,
) -> None:
    await finished(store, "sess_1", "a", "b")
    await store.mark_filtered(delivery_id("sess_1", "a"), T + 5)
    await store.dead_letter(delivery_id("sess_1", "b"), "HTTP 400", T + 5)
    assert await store.discard_deliveries([delivery_id("sess_1", "b")], T + 6) == 1
    assert (await get(store)).state is CallState.DELIVERED


async def test_a_filtered_delivery_does_not_keep_its_call_from_retention(store: Store) -> None:
    await finished(store, "sess_1", "a")
    await store.mark_filtered(delivery_id("sess_1", "a"), T + 5)
    assert await store.prune(T + 40 * DAY, T + 40 * DAY, 100) == (1, 1)
    assert await store.get_call("sess_1") is None


async def test_a_replayed_filtered_delivery_is_pending_again_and_reopens_the_call(store: Store) -> None:
    await finished(store, "sess_1", "a")
    await store.mark_filtered(delivery_id("sess_1", "a"), T + 5)
    request = ReplayRequest(who="tester", configured=("a",), delivery_ids=(delivery_id("sess_1", "a"),))
    outcome = await store.replay(request, T + 10)
    assert (outcome.matched, outcome.replayed) == (1, 1)
    assert (await deliveries(store))["a"].state is DeliveryState.PENDING
    assert (await get(store)).state is CallState.COMPLETED
    assert len(await store.claim_deliveries("a", 1, T + 10, LEASE, OWNER)) == 1
