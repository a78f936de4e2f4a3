"""The carrier part of the Store contract (``CarrierStore``), on every backend."""

from __future__ import annotations

from receiver.lifecycle import CallState
from receiver.store import Store
from receiver.store.carrier_port import CarrierEvent, CarrierOutcome, CarrierPlan, LegKind

T = 1_000_000.0
PLAN = CarrierPlan(
    analysis_key=lambda session_id: f"key-{session_id}",
    end_session={"twilio": True, "telnyx": False},
    settle_seconds=5.0,
    hold_seconds=3600.0,
)


def event(
    event_id: str, call_id: str, kind: LegKind, session_id: str | None = None, **call: object
) -> CarrierEvent:
    return CarrierEvent(
        source="twilio",
        event_id=event_id,
        carrier_call_id=call_id,
        session_id=session_id,
        kind=kind,
        status=kind.value,
        call={"carrier_call_id": call_id, **call},
        reason="twilio CallStatus=busy" if kind is LegKind.SKIPPED else None,
    )


async def test_an_ended_leg_creates_the_call_due_after_the_settle_time(store: Store) -> None:
    applied = await store.accept_carrier_event(event("e1", "CA1", LegKind.ENDED, "sess_c1", to="+1"), PLAN, T)
    assert (applied.outcome, applied.session_id) == (CarrierOutcome.ACCEPTED, "sess_c1")
    found = await store.get_call("sess_c1")
    assert found is not None
    call, _ = found
    assert (call.state, call.next_at, call.end_session, call.analysis_key) == (
        CallState.RECEIVED,
        T + 5.0,
        True,
        "key-sess_c1",
    )
    assert call.fields == {"carrier_call_id": "CA1", "to": "+1"}
    assert await store.claim_calls_to_start(10, T + 1, 60, "o") == []
    assert [c.session_id for c in await store.claim_calls_to_start(10, T + 6, 60, "o")] == ["sess_c1"]


async def test_the_same_event_twice_is_a_duplicate(store: Store) -> None:
    first = await store.accept_carrier_event(event("e1", "CA1", LegKind.ENDED, "sess_c2"), PLAN, T)
    again = await store.accept_carrier_event(event("e1", "CA1", LegKind.ENDED, "sess_c2"), PLAN, T + 1)
    assert (first.outcome, again.outcome) == (CarrierOutcome.ACCEPTED, CarrierOutcome.DUPLICATE)


async def test_an_unmatched_event_waits_for_its_mapping_and_is_then_applied_once(store: Store) -> None:
    applied = await store.accept_carrier_event(event("e1", "CA9", LegKind.ENDED, None, to="+9"), PLAN, T)
    assert (applied.outcome, applied.session_id) == (CarrierOutcome.UNMATCHED, None)
    assert await store.count_unmatched_carrier_events() == 1
    [waiting] = await store.list_carrier_events(None, 10)
    assert (waiting.carrier_call_id, waiting.session_id, waiting.call["to"]) == ("CA9", None, "+9")

    matched = await store.map_carrier_call("CA9", "sess_c3", PLAN, T + 10)
    assert [(a.outcome, a.session_id) for a in matched] == [(CarrierOutcome.ACCEPTED, "sess_c3")]
    assert await store.count_unmatched_carrier_events() == 0
    assert await store.map_carrier_call("CA9", "sess_c3", PLAN, T + 11) == []
    [kept] = await store.list_carrier_events("sess_c3", 10)
    assert kept.matched_at == T + 10
    # once mapped, a later event of that carrier call finds its session by itself
    later = await store.accept_carrier_event(event("e2", "CA9", LegKind.ENDED), PLAN, T + 12)
    assert (later.outcome, later.session_id) == (CarrierOutcome.MERGED, "sess_c3")


async def test_a_live_other_leg_holds_the_call_until_it_ends(store: Store) -> None:
    await store.accept_carrier_event(event("a0", "CA_A", LegKind.LIVE, "sess_c4"), PLAN, T)
    await store.accept_carrier_event(event("b0", "CA_B", LegKind.LIVE, "sess_c4"), PLAN, T)
    first = await store.accept_carrier_event(event("a1", "CA_A", LegKind.ENDED, "sess_c4"), PLAN, T + 1)
    assert first.outcome is CarrierOutcome.ACCEPTED
    found = await store.get_call("sess_c4")
    assert found is not None
    assert found[0].next_at == T + 1 + 3600.0
    last = await store.accept_carrier_event(
        event("b1", "CA_B", LegKind.ENDED, "sess_c4", to="+2"), PLAN, T + 2
    )
    assert last.outcome is CarrierOutcome.MERGED
    found = await store.get_call("sess_c4")
    assert found is not None
    assert (found[0].next_at, found[0].fields["to"]) == (T + 2 + 5.0, "+2")


async def test_a_leg_that_never_connected_skips_the_call_unless_another_leg_is_live(store: Store) -> None:
    alone = await store.accept_carrier_event(event("s1", "CA_S", LegKind.SKIPPED, "sess_c5"), PLAN, T)
    assert alone.outcome is CarrierOutcome.SKIPPED
    found = await store.get_call("sess_c5")
    assert found is not None
    assert (found[0].state, found[0].reason) == (
        CallState.SKIPPED,
        "twilio CallStatus=busy",
    )

    await store.accept_carrier_event(event("l1", "CA_L", LegKind.LIVE, "sess_c6"), PLAN, T)
    beside = await store.accept_carrier_event(event("s2", "CA_T", LegKind.SKIPPED, "sess_c6"), PLAN, T)
    assert beside.outcome is CarrierOutcome.IGNORED
    assert await store.get_call("sess_c6") is None


async def test_carrier_text_postgres_would_refuse_is_kept_anyway(store: Store) -> None:
    odd = event("n1", "CA_N", LegKind.ENDED, "sess_c7", note="caf\u00e9 \u2603 \U0001f600", n=1.5)
    assert (await store.accept_carrier_event(odd, PLAN, T)).outcome is CarrierOutcome.ACCEPTED
    found = await store.get_call("sess_c7")
    assert found is not None
    assert found[0].fields["note"] == "caf\u00e9 \u2603 \U0001f600"


async def test_a_leg_that_connects_after_a_skipped_one_starts_the_call_after_all(store: Store) -> None:
    await store.accept_carrier_event(event("s1", "CA_busy", LegKind.SKIPPED, "sess_c8"), PLAN, T)
    later = await store.accept_carrier_event(
        event("e1", "CA_ok", LegKind.ENDED, "sess_c8", to="+8"), PLAN, T + 1
    )
    assert later.outcome is CarrierOutcome.ACCEPTED
    found = await store.get_call("sess_c8")
    assert found is not None
    call = found[0]
    assert (call.state, call.reason, call.next_at, call.fields["to"]) == (
        CallState.RECEIVED,
        None,
        T + 6.0,
        "+8",
    )
    assert [c.session_id for c in await store.claim_calls_to_start(10, T + 7, 60, "o")] == ["sess_c8"]


async def test_pruning_removes_old_matched_events_and_mappings_but_keeps_unmatched_ones(store: Store) -> None:
    await store.accept_carrier_event(event("m1", "CA_M", LegKind.ENDED, "sess_c9"), PLAN, T)
    await store.accept_carrier_event(event("u1", "CA_U", LegKind.ENDED), PLAN, T)
    assert await store.prune_carrier_events(T, 500) == 0
    assert await store.prune_carrier_events(T + 1, 500) == 2  # the matched event and its mapping
    assert await store.list_carrier_events("sess_c9", 10) == []
    [kept] = await store.list_carrier_events(None, 10)
    assert kept.event_id == "u1"
