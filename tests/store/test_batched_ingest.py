"""Concurrent inbound events on both stores: batched together, each keeps its own outcome."""

from __future__ import annotations

import asyncio
from collections import Counter

from receiver.store import EventOutcome, NewCall, Store, StoreError
from tests.store.conftest import Backend

T = 1_000_000.0
K = "kallglot"


async def test_concurrent_events_each_get_their_own_outcome(store: Store) -> None:
    fresh = [
        store.accept_call(K, f"evt_{i}", "session.ended", NewCall(f"sess_{i}", f"key_{i}"), T)
        for i in range(60)
    ]
    # The same event twice, and a second event for a call, in the same burst.
    again = [
        store.accept_call(K, f"evt_{i}", "session.ended", NewCall(f"sess_{i}", f"key_{i}"), T)
        for i in range(10)
    ]
    merged = [
        store.accept_call(
            "telephony", f"tel_{i}", "call-ended", NewCall(f"sess_{i}", f"key_{i}", {"to": "+1"}), T
        )
        for i in range(20, 30)
    ]

    outcomes = await asyncio.gather(*fresh, *again, *merged)

    # Whichever copy of an event comes first is new, the other a duplicate; whichever event of a
    # call comes first creates it, the other is merged into it.
    assert Counter(outcomes[:70])[EventOutcome.DUPLICATE] == 10
    per_call = {i: [outcomes[i]] for i in range(60)}
    for i in range(10):
        per_call[i].append(outcomes[60 + i])
    for i in range(20, 30):
        per_call[i].append(outcomes[70 + i - 20])
    for i, seen in per_call.items():
        assert seen.count(EventOutcome.ACCEPTED) == 1, (i, seen)
        assert set(seen) <= {EventOutcome.ACCEPTED, EventOutcome.MERGED, EventOutcome.DUPLICATE}
    for i in range(60):
        assert await store.get_call(f"sess_{i}") is not None
    found = await store.get_call("sess_25")
    assert found is not None
    assert found[0].fields.get("to") == "+1"


async def test_a_failing_event_in_a_burst_fails_alone(backend: Backend) -> None:
    store = backend.store
    good = [
        store.accept_call(K, f"ok_{i}", "session.ended", NewCall(f"sess_ok{i}", "key"), T) for i in range(20)
    ]
    # PostgreSQL's jsonb refuses the NUL character that SQLite stores: the store must keep the
    # failure with this one event (a StoreError, HTTP 503) and accept all the others.
    bad = store.accept_call(K, "bad", "session.ended", NewCall("sess_bad", "key", {"name": "a\u0000b"}), T)

    outcomes = await asyncio.gather(*good, bad, return_exceptions=True)

    assert outcomes[:20] == [EventOutcome.ACCEPTED] * 20
    if backend.name == "postgres":
        assert isinstance(outcomes[20], StoreError)
    else:
        assert outcomes[20] is EventOutcome.ACCEPTED
