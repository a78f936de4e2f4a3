"""The store's port for carrier (telephony) events: values and the operations on them.

A carrier event is kept whatever happens: matched to a session it may create or move the call,
unmatched it waits (``session_id`` NULL) until a mapping from the carrier's call id arrives. Both
backends implement ``CarrierStore`` in their own ``carriers_*`` module, in one transaction each.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class LegKind(StrEnum):
    """What a carrier event says about one call leg."""

    LIVE = "live"  # initiated, ringing, answered...: the leg is (or may be) up; never ends the call
    ENDED = "ended"  # the leg ended after being answered: the call may be analysed
    SKIPPED = "skipped"  # the leg never connected (busy, failed, no-answer, canceled): no credit


class CarrierOutcome(StrEnum):
    """What became of a carrier event (also the ``outcome`` label of ``receiver_events_total``)."""

    ACCEPTED = "accepted"  # a new call, due after the settle time
    MERGED = "merged"  # the call was known: fields merged, its start moved to after this leg
    SKIPPED = "skipped"  # the call is recorded as skipped with the carrier's reason
    IGNORED = "ignored"  # kept, nothing to do (a live leg, a skip while another leg is known)
    UNMATCHED = "unmatched"  # kept, waiting for the mapping of its carrier call id to a session
    DUPLICATE = "duplicate"  # this event was seen before


@dataclass(frozen=True)
class CarrierEvent:
    """One verified carrier callback, reduced to what the receiver acts on."""

    source: str  # "twilio" or "telnyx"
    event_id: str  # the dedup key
    carrier_call_id: str  # CallSid / call_control_id
    session_id: str | None  # when the callback itself names the session
    kind: LegKind
    status: str  # the carrier's own status or event type
    call: dict[str, Any] = field(default_factory=dict)  # fields that travel under ``call``
    reason: str | None = None  # why a skipped leg did not connect


@dataclass(frozen=True)
class CarrierPlan:
    """How an ended leg becomes a call (decided by the service, applied by the store)."""

    analysis_key: Callable[[str], str]
    end_session: Mapping[str, bool]  # by source
    settle_seconds: float  # start this long after the last leg ended
    hold_seconds: float  # at most this long while another leg of the session is still live
    profile: str | None = None  # the analysis settings the key was computed from (stored with the call)
    include: tuple[str, ...] | None = None


@dataclass(frozen=True)
class CarrierEventRecord:
    source: str
    event_id: str
    carrier_call_id: str
    session_id: str | None
    kind: LegKind
    status: str
    call: dict[str, Any]
    reason: str | None
    received_at: float
    matched_at: float | None


@dataclass(frozen=True)
class Applied:
    """The outcome of an event, and the session it now belongs to (None while unmatched)."""

    outcome: CarrierOutcome
    session_id: str | None


class CarrierStore(Protocol):
    async def accept_carrier_event(self, event: CarrierEvent, plan: CarrierPlan, now: float) -> Applied:
        """Keep the event (deduplicated on source + event id); resolve its session from the event
        or the recorded mapping; when resolved, apply it to the session's call."""

    async def map_carrier_call(
        self, carrier_call_id: str, session_id: str, plan: CarrierPlan, now: float
    ) -> list[Applied]:
        """Record that a carrier call belongs to a session, and apply the events that waited for it
        (oldest first). A call id already mapped keeps its first session."""

    async def list_carrier_events(self, session_id: str | None, limit: int) -> list[CarrierEventRecord]:
        """The session's carrier events, or the unmatched ones when ``session_id`` is None."""

    async def count_unmatched_carrier_events(self) -> int: ...

    async def prune_carrier_events(self, before: float, batch: int) -> int:
        """Delete matched carrier events and call mappings older than ``before`` (at most ``batch``
        of each); unmatched events are kept until they match. Returns how many rows went."""
