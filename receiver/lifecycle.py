"""Call and delivery states, and the transitions allowed between them; pure.

A call only moves forward (CONTRACT §1)::

    received -> starting -> processing -> completed|failed -> delivered
        \\-> skipped        \\-> stale -> completed|failed

Reordered or duplicated events are harmless because a transition that is not allowed from the
current state is a no-op, never an error: a late ``analysis.complete`` after a poll finished the
call, or a late POST response after the webhook, changes nothing.
"""

from __future__ import annotations

from enum import StrEnum


class CallState(StrEnum):
    RECEIVED = "received"
    STARTING = "starting"
    PROCESSING = "processing"
    STALE = "stale"
    COMPLETED = "completed"
    FAILED = "failed"
    DELIVERED = "delivered"
    SKIPPED = "skipped"


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
    FILTERED = "filtered"
    #: Its handler is no longer configured (found at start-up); never claimed, never pruned until
    #: an operator discards it or moves it to another handler (``Store.discard_deliveries`` /
    #: ``Store.move_deliveries``). It becomes pending again if the handler comes back.
    ORPHANED = "orphaned"


_ALLOWED: dict[CallState, frozenset[CallState]] = {
    CallState.RECEIVED: frozenset(
        {CallState.STARTING, CallState.SKIPPED, CallState.PROCESSING, CallState.COMPLETED, CallState.FAILED}
    ),
    CallState.STARTING: frozenset(
        {CallState.RECEIVED, CallState.PROCESSING, CallState.COMPLETED, CallState.FAILED, CallState.SKIPPED}
    ),
    CallState.PROCESSING: frozenset({CallState.STALE, CallState.COMPLETED, CallState.FAILED}),
    CallState.STALE: frozenset({CallState.COMPLETED, CallState.FAILED}),
    CallState.COMPLETED: frozenset({CallState.DELIVERED}),
    CallState.FAILED: frozenset({CallState.DELIVERED}),
    CallState.DELIVERED: frozenset(),
    CallState.SKIPPED: frozenset(),
}

#: States in which the analysis has not been accepted by Kallglot yet (the starter's work).
TO_START = (CallState.RECEIVED, CallState.STARTING)
#: States in which an accepted analysis is being followed (the poller's work).
IN_FLIGHT = (CallState.PROCESSING, CallState.STALE)
#: States in which the analysis is finished (a late event for the call changes nothing).
FINISHED = (CallState.COMPLETED, CallState.FAILED, CallState.DELIVERED)
TERMINAL = (CallState.DELIVERED, CallState.SKIPPED)
#: Calls retention may delete (with their deliveries), unless a delivery still blocks it.
PRUNABLE = (*FINISHED, CallState.SKIPPED)
#: Delivery states that hold a result nobody has received yet: a call with one is never pruned.
UNDELIVERED = (DeliveryState.PENDING, DeliveryState.DEAD, DeliveryState.ORPHANED)
#: Delivery states an operator may discard or move to another handler.
OPERABLE = (DeliveryState.DEAD, DeliveryState.ORPHANED)


def can_transition(current: CallState, target: CallState) -> bool:
    """True when ``current -> target`` is a forward move."""
    return target in _ALLOWED[current]


def allowed_sources(target: CallState) -> tuple[CallState, ...]:
    """Every state from which ``target`` may be reached (for compare-and-set updates in SQL)."""
    return tuple(state for state, targets in _ALLOWED.items() if target in targets)


def analysis_status(raw: str | None) -> CallState | None:
    """Map a Kallglot analysis status (NEW or OLD docs) to the finished call state, or None if pending."""
    if raw in ("completed", "complete"):
        return CallState.COMPLETED
    if raw == "failed":
        return CallState.FAILED
    return None
