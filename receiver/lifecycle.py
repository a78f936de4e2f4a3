"""Call and delivery states, and the transitions allowed between them; pure.

A call only moves forward (CONTRACT §1)::

    received -> starting -> processing -> completed|failed -> delivered
        \\-> skipped        \\-> stale -> completed|failed

(a finished analysis that no handler subscribes to goes straight to ``delivered``; otherwise the call
is ``delivered`` once each of its deliveries is ``delivered`` or ``filtered``, see ``DONE``). Two moves go
back, deliberately, and are listed apart in ``REOPENINGS``: a provisional carrier skip restarted by
a leg that connected after all (``skipped -> received``, never once an analysis exists), and an
operator's replay of a delivered call (``delivered -> completed|failed`` until the replayed
deliveries are done). Nothing else leaves a terminal state.

Reordered or duplicated events are harmless because a transition that is not allowed from the
current state is a no-op, never an error: a late ``analysis.complete`` after a poll finished the
call, or a late POST response after the webhook, changes nothing.

This module is the single source of the states: the stores' SQL spells them with ``sql_value`` and
``sql_in`` (constants, never input), and the store contract suite checks every transition a store
performs against ``can_transition``.
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
    #: Its handler's ``when`` did not match the document at delivery time: done, nothing was sent.
    FILTERED = "filtered"
    #: Its handler is no longer configured (found at start-up); never claimed, never pruned until
    #: an operator discards it or moves it to another handler (``Store.discard_deliveries`` /
    #: ``Store.move_deliveries``). It becomes pending again if the handler comes back.
    ORPHANED = "orphaned"


_S = CallState
#: The result of an analysis ends the call from any state before it (a webhook may beat the POST's
#: answer); with no subscribed handler it is delivered at once.
_ENDS = frozenset({_S.COMPLETED, _S.FAILED, _S.DELIVERED})

#: Forward moves: every state change the stores make, except the ``REOPENINGS``.
_FORWARD: dict[CallState, frozenset[CallState]] = {
    _S.RECEIVED: frozenset({_S.STARTING, _S.SKIPPED, _S.PROCESSING}) | _ENDS,
    _S.STARTING: frozenset({_S.PROCESSING, _S.SKIPPED}) | _ENDS,
    _S.PROCESSING: frozenset({_S.STALE}) | _ENDS,
    _S.STALE: _ENDS,
    _S.COMPLETED: frozenset({_S.DELIVERED}),
    _S.FAILED: frozenset({_S.DELIVERED}),
    _S.DELIVERED: frozenset(),
    _S.SKIPPED: frozenset(),
}

#: The only backward moves, each made by one store operation on purpose (see the module docstring):
#: ``Store.accept_call`` from a carrier that connected after its provisional skip, and
#: ``Store.replay`` of a delivered call.
REOPENINGS: dict[CallState, frozenset[CallState]] = {
    _S.SKIPPED: frozenset({_S.RECEIVED}),
    _S.DELIVERED: frozenset({_S.COMPLETED, _S.FAILED}),
}

_ALLOWED: dict[CallState, frozenset[CallState]] = {
    state: _FORWARD[state] | REOPENINGS.get(state, frozenset()) for state in CallState
}

#: States a call is created in (``skipped``: a carrier leg that never connected).
INITIAL = (CallState.RECEIVED, CallState.SKIPPED)
#: States in which the analysis has not been accepted by Kallglot yet (the starter's work).
TO_START = (CallState.RECEIVED, CallState.STARTING)
#: States in which an accepted analysis is being followed (the poller's work).
IN_FLIGHT = (CallState.PROCESSING, CallState.STALE)
#: States in which the analysis is finished (a late event for the call changes nothing).
FINISHED = (CallState.COMPLETED, CallState.FAILED, CallState.DELIVERED)
TERMINAL = (CallState.DELIVERED, CallState.SKIPPED)
#: States of a finished analysis whose deliveries are not all done yet.
ANALYSED = (CallState.COMPLETED, CallState.FAILED)
#: States of a call still being worked on (the ``receiver_calls`` gauge's states).
ACTIVE = tuple(state for state in CallState if state not in TERMINAL)
#: Calls retention may delete (with their deliveries), unless a delivery still blocks it.
PRUNABLE = (*FINISHED, CallState.SKIPPED)
#: Delivery states that hold a result nobody has received yet: a call with one is never pruned.
UNDELIVERED = (DeliveryState.PENDING, DeliveryState.DEAD, DeliveryState.ORPHANED)
#: Delivery states an operator may discard or move to another handler.
OPERABLE = (DeliveryState.DEAD, DeliveryState.ORPHANED)
#: Delivery states that are done: a finished call whose deliveries are all in them is ``delivered``.
DONE = (DeliveryState.DELIVERED, DeliveryState.FILTERED)


_D = DeliveryState
#: Delivery moves: a pending delivery settles (``filtered`` when its ``when`` does not match at
#: delivery time); an operator (or the handler coming back) makes a settled one pending again.
#: Deliveries are created ``pending``; discarding deletes them.
_DELIVERY_MOVES: dict[DeliveryState, frozenset[DeliveryState]] = {
    _D.PENDING: frozenset({_D.DELIVERED, _D.DEAD, _D.ORPHANED, _D.FILTERED}),
    _D.DELIVERED: frozenset({_D.PENDING}),  # replay
    _D.DEAD: frozenset({_D.PENDING}),  # replay, or moved back to its handler
    _D.ORPHANED: frozenset({_D.PENDING}),  # its handler is configured again, or moved
    _D.FILTERED: frozenset({_D.PENDING}),  # replay
}


def can_transition(current: CallState, target: CallState) -> bool:
    """True when a store may move a call from ``current`` to ``target`` (forward, or a reopening)."""
    return target in _ALLOWED[current]


def can_transition_delivery(current: DeliveryState, target: DeliveryState) -> bool:
    """True when a store may move a delivery from ``current`` to ``target``."""
    return target in _DELIVERY_MOVES[current]


def is_forward(current: CallState, target: CallState) -> bool:
    """True when ``current -> target`` is a forward move (not one of the ``REOPENINGS``)."""
    return target in _FORWARD[current]


def sql_value(state: StrEnum) -> str:
    """A state as an SQL literal (a constant of this module, never input)."""
    return f"'{state.value}'"


def sql_in(*states: StrEnum) -> str:
    """States as a parenthesised SQL list, for ``state IN ...``: literals let the planner match
    the partial indexes, which a bound parameter would not."""
    return "(" + ", ".join(sql_value(state) for state in states) + ")"


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
